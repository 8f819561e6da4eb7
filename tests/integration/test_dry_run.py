"""`capguard --dry-run AGENT ...` and `capguard explain AGENT ...`: what a run would be, from the real command line;
the agent never starts and the ledger is not written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from capguard.ledger import RunEnd, RunStart, UsageRecord, open_ledger
from tests.integration.conftest import make_repo, trusted_config

SECRET = "sk-dryrunsecret0123456789"


def fake_agent(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """An agent that leaves a mark if it ever runs."""
    mark = tmp_path / f"{name}-ran"
    agent = tmp_path / f"fake-{name}"
    agent.write_text(f"#!{sys.executable}\nopen({str(mark)!r}, 'w').write('ran')\n")
    agent.chmod(0o755)
    return agent, mark


def capguard(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "capguard", *args],
        cwd=cwd,
        env={**os.environ, "PGPASSWORD": "hunter2", **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def flat(out: str) -> str:
    """The words of the text, one space apart: wrapped lines joined (wrapping breaks at spaces only)."""
    return " ".join(out.split())


def ledger_rows(path: Path) -> tuple:
    with open_ledger(str(path)) as ledger:
        return (
            ledger.query("SELECT * FROM runs ORDER BY id"),
            ledger.query("SELECT * FROM usage_events ORDER BY id"),
            ledger.query("SELECT * FROM users ORDER BY id"),
        )


@pytest.fixture
def home() -> Path:
    return Path(os.environ["CAPGUARD_HOME"])


@pytest.fixture
def seeded(home) -> Path:
    """The default ledger with one finished run of this month."""
    path = home / "ledger.db"
    with open_ledger(str(path)) as ledger:
        ledger.start_run(
            RunStart("01old", "aider", ["aider"], "/w", "dev@example.com", "h", "2026-12-01T09:00:00Z", {})
        )
        ledger.record_usage(
            "01old", UsageRecord("k1", "2026-12-01T09:00:01Z", "openai/gpt-4o", 10, 1, 0, 0, 900, "agent")
        )
        ledger.finish_run("01old", RunEnd("2026-12-01T09:01:00Z", None, 0, 900, 11, 1, 0, {}))
    return path


def test_dry_run_says_what_would_run_and_starts_nothing_writes_nothing(tmp_path, home, seeded):
    agent, mark = fake_agent(tmp_path, "aider")
    repo = make_repo(tmp_path / "repo")
    trusted_config(repo / ".capguard.toml", f'wall = "20m"\n[agents.aider]\ncommand = "{agent}"\n')
    before, runs_before = ledger_rows(seeded), sorted((home / "runs").glob("*")) if (home / "runs").exists() else []
    args = ["--model", "openai/gpt-4o", "--openai-api-key", SECRET, "--no-stream", "hello.py"]
    done = capguard("--usd", "5", "--dry-run", "aider", *args, cwd=repo, env={"CAPGUARD_USER": "dev@example.com"})
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert not mark.exists()  # the agent never ran
    assert ledger_rows(seeded) == before  # not a row more, not a row changed
    assert (sorted((home / "runs").glob("*")) if (home / "runs").exists() else []) == runs_before
    assert SECRET not in out and "hunter2" not in out
    text = flat(out)
    command = f"{agent} --model openai/gpt-4o --openai-api-key <redacted> --no-stream hello.py --analytics-log"
    assert f"Command line (secrets masked) {command} {home}/runs/<run-id>/aider.analytics.jsonl Environment" in text
    assert "PGPASSWORD removed: capguard's secret, never the agent's" in text
    assert "usd $5.00 flag --usd tokens off default wall 20m00s repo file " in text
    assert "stuck 5 default" in text
    assert f"Meter: the files it watches {home}/runs/<run-id>/aider.analytics.jsonl model openai/gpt-4o" in text
    assert f"Ledger {seeded} (default) charged to dev@example.com" in text
    assert all(len(line) <= 80 or "/" in line for line in out.splitlines())  # only a long path goes beyond
    explained = capguard("--usd", "5", "explain", "aider", *args, cwd=repo, env={"CAPGUARD_USER": "dev@example.com"})
    assert explained.returncode == 0 and explained.stdout == out
    assert not mark.exists() and ledger_rows(seeded) == before


def test_explain_json_has_argv_env_caps_meter_and_ledger(tmp_path, home, seeded):
    agent, mark = fake_agent(tmp_path, "aider")
    repo = make_repo(tmp_path / "repo")
    trusted_config(repo / ".capguard.toml", f'[agents.aider]\ncommand = "{agent}"\n')
    done = capguard("explain", "--json", "--steps", "30", "aider", "--openai-api-key", SECRET, cwd=repo)
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert plan["argv"][:3] == [str(agent), "--openai-api-key", "<redacted>"]
    assert {"name": "PGPASSWORD", "change": "removed", "value": None} in plan["env"]
    assert plan["caps"]["steps"] == {"value": 30, "origin": "flag --steps"}
    assert plan["caps"]["usd"] == {"value": None, "origin": "default"}
    assert plan["meter"]["files"] == [f"{home}/runs/<run-id>/aider.analytics.jsonl"]
    assert plan["meter"]["polite_stop"] == ["SIGINT", "SIGINT"]  # interactive aider: two Ctrl-C, as a user would
    assert plan["ledger"] == {"target": str(seeded), "origin": "default", "exists": True}
    assert SECRET not in done.stdout and not mark.exists()


def test_the_month_is_read_and_a_refusal_said_without_touching_the_ledger(tmp_path, home, seeded):
    agent, mark = fake_agent(tmp_path, "aider")
    team = tmp_path / "team.toml"
    team.write_text('unlock = ["user"]\n[team]\nmonthly_usd = "0.0005"\n')  # the seeded run spent $0.0009 this month
    repo = make_repo(tmp_path / "repo")
    trusted_config(repo / ".capguard.toml", f'[agents.aider]\ncommand = "{agent}"\n')
    before = ledger_rows(seeded)
    env = {"CAPGUARD_TEAM_CONFIG": str(team), "CAPGUARD_USER": "dev@example.com"}
    done = capguard("explain", "--json", "aider", cwd=repo, env=env)
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert plan["month"]["standings"]["budgets"][0]["spent_usd"] == pytest.approx(0.0009)
    assert plan["would_refuse"] and "monthly" in plan["would_refuse"]
    assert plan["caps"]["monthly"]["origin"] == f"team file {team}"
    text = capguard("--dry-run", "aider", cwd=repo, env=env).stdout
    assert "capguard would refuse to start: " in flat(text)
    assert ledger_rows(seeded) == before and not mark.exists()


def test_a_ledger_that_does_not_exist_is_not_created(tmp_path, home):
    agent, mark = fake_agent(tmp_path, "aider")
    repo = make_repo(tmp_path / "repo")
    trusted_config(repo / ".capguard.toml", f'[agents.aider]\ncommand = "{agent}"\n')
    target = tmp_path / "new" / "ledger.db"
    team = tmp_path / "team.toml"
    team.write_text('unlock = ["ledger"]\n[team]\nmonthly_usd = 50\n')
    done = capguard("--dry-run", "--ledger", str(target), "aider", cwd=repo, env={"CAPGUARD_TEAM_CONFIG": str(team)})
    assert done.returncode == 0, done.stderr
    assert f"Ledger {target} (not created yet: the run creates it) (--ledger)" in flat(done.stdout)
    assert "Month no ledger yet: nothing spent this month" in flat(done.stdout)
    assert not target.exists() and not target.parent.exists() and not mark.exists()


def test_claude_dry_run_masks_the_receiver_secret_and_closes_it(tmp_path, home):
    agent, mark = fake_agent(tmp_path, "claude")
    repo = make_repo(tmp_path / "repo")
    trusted_config(repo / ".capguard.toml", f'[agents.claude]\ncommand = "{agent}"\n')
    env = {"CLAUDE_CONFIG_DIR": str(tmp_path / "claude-config")}
    for name in [n for n in os.environ if n.startswith("OTEL_") or n == "CLAUDE_CODE_ENABLE_TELEMETRY"]:
        env[name] = ""  # the user's own telemetry would leave capguard's receiver out
    done = capguard("explain", "--json", "--usd", "2", "claude", "-p", "hi", cwd=repo, env=env)
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    changes = {c["name"]: c["value"] for c in plan["env"]}
    assert changes["OTEL_EXPORTER_OTLP_HEADERS"] == "x-capguard-token=<redacted>"
    assert changes["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:<port>"
    assert "--max-budget-usd" in plan["argv"] and str(home / "runs" / "<run-id>") in " ".join(plan["argv"])
    assert f"{home}/runs/<run-id>/claude.otel.jsonl" in plan["meter"]["files"]
    assert plan["meter"]["polite_stop"] == ["SIGINT"]
    assert not mark.exists() and not (home / "runs").exists()


@pytest.mark.parametrize(
    ("agent_name", "home_var", "extra"),
    [
        ("claude", "CLAUDE_CONFIG_DIR", []),
        ("codex", "CODEX_HOME", ["exec", "hi"]),
        ("gemini", "GEMINI_CLI_HOME", ["-p", "hi"]),
        ("opencode", "XDG_DATA_HOME", ["run", "hi"]),
    ],
)
def test_a_dry_run_makes_no_folder_in_the_agents_home(tmp_path, home, agent_name, home_var, extra):
    agent, mark = fake_agent(tmp_path, agent_name)
    repo = make_repo(tmp_path / "repo")
    trusted_config(repo / ".capguard.toml", f'[agents.{agent_name}]\ncommand = "{agent}"\n')
    agent_home = tmp_path / "agent-home"
    agent_home.mkdir()
    done = capguard("--dry-run", agent_name, *extra, cwd=repo, env={home_var: str(agent_home)})
    assert done.returncode == 0, done.stderr
    assert "Command line" in done.stdout
    assert list(agent_home.rglob("*")) == []  # a run makes the folders it watches; a dry run makes none
    assert not mark.exists()


def test_strict_dry_run_shows_the_proxy_and_its_base_url_secret_masked(tmp_path, home):
    agent, mark = fake_agent(tmp_path, "claude")
    codex, codex_mark = fake_agent(tmp_path, "codex")
    repo = make_repo(tmp_path / "repo")
    trusted_config(
        repo / ".capguard.toml",
        f'[agents.claude]\ncommand = "{agent}"\n[agents.codex]\ncommand = "{codex}"\n[models]\ndeny = ["*-preview"]\n',
    )
    env = {"CLAUDE_CONFIG_DIR": str(tmp_path / "claude-config"), "ANTHROPIC_BASE_URL": "https://u:pw@gw.example/v1"}
    done = capguard("explain", "--json", "--strict", "--usd", "2", "claude", "-p", "hi", cwd=repo, env=env)
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert (plan["meter"]["kind"], plan["meter"]["origin"]) == ("proxy", "--strict")
    url = "http://127.0.0.1:<port>/<secret>/anthropic"
    assert plan["meter"]["proxy"]["fronts"] == [
        {"provider": "anthropic", "variables": {"ANTHROPIC_BASE_URL": url}, "upstream": "https://gw.example/v1"}
    ]
    assert {"name": "ANTHROPIC_BASE_URL", "change": "changed", "value": url} in plan["env"]
    assert plan["meter"]["proxy"]["deny"] == ["*-preview"] and plan["would_refuse"] is None
    assert "--max-budget-usd" not in plan["argv"]  # the proxy holds the USD cap before each request
    assert "pw" not in done.stdout
    text = flat(capguard("--strict", "--dry-run", "claude", cwd=repo, env=env).stdout)
    assert "Meter: capguard's metering proxy on 127.0.0.1 (strict mode, --strict)" in text
    assert "anthropic: ANTHROPIC_BASE_URL = the proxy, which forwards to https://gw.example/v1" in text
    files = capguard("explain", "--json", "claude", cwd=repo, env=env)
    assert json.loads(files.stdout)["meter"]["kind"] == "files" and json.loads(files.stdout)["meter"]["proxy"] is None
    env["CODEX_HOME"] = str(tmp_path / "codex-home")  # no API key there: Codex's OpenAI provider is refused
    from capguard.agents.codex.adapter import OPENAI_DEFAULT

    refused = capguard("explain", "--json", "--strict", "codex", cwd=repo, env=env)
    assert refused.returncode == 2 and "cannot meter codex here: no API key" in refused.stderr
    assert refused.stderr.count("\n") == 1
    fronted = capguard(
        "explain", "--json", "--strict", "codex", "exec", "hi", cwd=repo, env={**env, "CODEX_API_KEY": "k"}
    )
    plan = json.loads(fronted.stdout)
    assert plan["meter"]["proxy"]["fronts"] == [
        {
            "provider": "openai",
            "variables": {"OPENAI_PROJECT": "<secret>"},
            "upstream": OPENAI_DEFAULT,
            "header": "OpenAI-Project",
        }
    ]  # the command line names the proxy without the secret; the header carries it
    assert 'openai_base_url="http://127.0.0.1:<port>/h/openai"' in plan["argv"]
    assert {"name": "OPENAI_PROJECT", "change": "added", "value": "<secret>"} in plan["env"]
    assert not mark.exists() and not codex_mark.exists() and not (home / "runs").exists()


def test_dry_run_with_a_subcommand_is_one_line_and_exit_2(tmp_path):
    done = capguard("--dry-run", "report", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.startswith("capguard: error: --dry-run goes with an agent")
    assert done.stderr.count("\n") == 1
