"""`capguard show RUN_ID` and `capguard report --run RUN_ID`: the story of one run, on SQLite and PostgreSQL, and of
a real aider run stopped at its cap."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from capguard.cli import options, report_cmd, show_cmd
from capguard.cli.commands import COMMANDS
from capguard.cli.dispatch import command_parser
from capguard.core.errors import ConfigError
from capguard.core.units import format_usd
from capguard.demo.fake_openai import FakeOpenAI, runaway_script
from capguard.ledger import RunEnd, RunStart, UsageRecord, open_ledger
from tests.integration.conftest import aider_flags
from tests.integration.test_ledger import BACKENDS, PG_DSN, make_target, with_option  # noqa: F401 (fixture)

backends = pytest.mark.parametrize("make_target", BACKENDS, indirect=True)

STOPPED = "01kbz3m4q2xyabcdefghjkmnpq"
TWIN = "01kbz3m4q2zzabcdefghjkmnpq"  # shares its first 10 characters with STOPPED
CAPS = {
    "usd": 0.4,
    "tokens": None,
    "wall_s": 1800.0,
    "steps": None,
    "map_tokens": None,
    "stuck": 5,
    "warn_at": 0.8,
    "unpriced": "stop",
    "monthly_remaining_usd": 2.5,
    "origins": {
        "usd": "flag --usd",
        "wall": "config file /home/alice/.config/capguard/config.toml",
        "tokens": "default",
        "steps": "default",
        "map_tokens": "default",
        "stuck": "default",
        "warn_at": "environment CAPGUARD_WARN_AT",
        "unpriced": "default",
        "monthly": "team file /etc/capguard/team.toml",
    },
}
REPORT = {
    "stop_detail": "cost $0.44 reached the $0.40 cap",
    "stop_steps": ["sending SIGINT to aider (pid 4242)", "aider (pid 4242) exited 0.31s after SIGINT"],
    "tree_stop": "cgroup",
    "notes": ["streaming aider: capguard meters aider's own estimates"],
    "blind_spots": ["aider's repo-map requests are not in its analytics log"],
    "elapsed_s": 10.25,
    "signal_received": None,
    "warnings": ["usd"],
}


@pytest.fixture
def seeded(make_target):
    """A run stopped at its USD cap after three replies (the last one updated once), and a run still going."""
    target = make_target()
    with open_ledger(target) as ledger:
        argv = ["aider", "--model", "openai/gpt-4o", "--openai-api-key", "<redacted>", "hello.py"]
        when = "2026-12-06T10:00:00Z"
        ledger.start_run(
            RunStart(STOPPED, "aider", argv, "/w/app", "alice@example.com", "box", when, CAPS, line="infra")
        )
        for i in range(3):
            usage = UsageRecord(
                f"k{i}", f"2026-12-06T10:00:0{i + 1}Z", "openai/gpt-4o", 50_000, 2_000, 0, 0, 145_000, "agent"
            )
            ledger.record_usage(STOPPED, usage)
        ledger.record_usage(
            STOPPED, UsageRecord("k2+1", "2026-12-06T10:00:09Z", "openai/gpt-4o", 0, 20, 0, 0, 200, "agent")
        )
        ledger.finish_run(STOPPED, RunEnd("2026-12-06T10:00:10Z", "usd", 122, 435_200, 156_020, 3, 0, REPORT))
        ledger.start_run(RunStart(TWIN, "claude", ["claude"], "/w", "bob", "box", "2026-12-06T11:00:00Z", {}))
    return target


def show(target: str, *args: str, capsys) -> str:
    ns = command_parser(COMMANDS["show"]).parse_args([*args, "--ledger", target])
    assert show_cmd.run(ns, options.flags_of(ns)) == 0
    return capsys.readouterr().out


def report(target: str, *args: str, capsys) -> str:
    ns = command_parser(COMMANDS["report"]).parse_args([*args, "--ledger", target])
    assert report_cmd.run(ns, options.flags_of(ns)) == 0
    return capsys.readouterr().out


@backends
def test_show_tells_the_story_of_a_stopped_run(seeded, capsys):
    out = show(seeded, STOPPED[:12], capsys=capsys)
    lines = out.splitlines()
    assert lines[0] == f"run {STOPPED}: aider, stopped by the usd cap"
    assert "argv     aider --model openai/gpt-4o --openai-api-key <redacted> hello.py" in lines
    assert "ended    2026-12-06 10:00:10 UTC (10.2s)" in lines and "exit     122" in lines
    caps = {line.split()[0]: line.split(None, 2)[1:] for line in lines[lines.index("Caps") + 1 :][:9]}
    assert caps["usd"] == ["$0.40", "flag --usd"]
    assert caps["wall"] == ["30m00s", "config file /home/alice/.config/capguard/config.toml"]
    assert caps["warn_at"] == ["80%", "environment CAPGUARD_WARN_AT"]
    assert caps["monthly"] == ["$2.50", "left  team file /etc/capguard/team.toml"]
    replies = [line.split() for line in lines if re.match(r"  \d\+? ", line)]
    assert [(r[0], r[1], r[-2], r[-1]) for r in replies] == [
        ("1", "10:00:01", "$0.14", "$0.14"),
        ("2", "10:00:02", "$0.14", "$0.29"),
        ("3", "10:00:03", "$0.14", "$0.44"),
        ("3+", "10:00:09", "$0.0002", "$0.44"),
    ]
    assert "Replies: 3 replies, 156k tokens, $0.44" in lines
    stop = lines[lines.index("Stop") :]
    assert stop[1:5] == [
        "  why: cost $0.44 reached the $0.40 cap",
        "  sending SIGINT to aider (pid 4242)",
        "  aider (pid 4242) exited 0.31s after SIGINT",
        "  tree stopped by: cgroup",
    ]
    assert "  - streaming aider: capguard meters aider's own estimates" in lines
    assert "  - aider's repo-map requests are not in its analytics log" in lines
    assert max(len(line) for line in lines) <= 80


@backends
def test_show_json_has_every_reply_and_the_running_total(seeded, capsys):
    data = json.loads(show(seeded, STOPPED, "--json", capsys=capsys))
    assert [r["reply"] for r in data["replies"]] == ["1", "2", "3", "3+"]
    assert [r["total_usd"] for r in data["replies"]] == pytest.approx([0.145, 0.29, 0.435, 0.4352])
    assert data["cost_usd"] == pytest.approx(0.4352) and data["reply_count"] == 3 and data["tokens"] == 156_020
    assert data["caps"]["usd"] == {"value": 0.4, "origin": "flag --usd"}
    assert data["stop"]["reason"] == "usd" and data["stop"]["tree_stop"] == "cgroup"
    assert data["exit_code"] == 122 and data["blind_spots"] == REPORT["blind_spots"]


@backends
def test_report_run_prints_what_show_prints(seeded, capsys):
    assert report(seeded, "--run", STOPPED[:12], capsys=capsys) == show(seeded, STOPPED[:12], capsys=capsys)
    assert report(seeded, "--run", TWIN, "--json", capsys=capsys) == show(seeded, TWIN, "--json", capsys=capsys)


@backends
def test_a_run_still_going_has_no_end_and_no_caps_recorded(seeded, capsys):
    lines = show(seeded, TWIN[:12], capsys=capsys).splitlines()
    assert lines[0] == f"run {TWIN}: claude, still running (or its capguard was killed)"
    assert "ended    -" in lines and "  none recorded" in lines and "Replies: 0 replies, 0 tokens, $0.00" in lines


@backends
def test_an_ambiguous_prefix_names_the_candidates_and_an_unknown_one_says_so(seeded, capsys):
    with pytest.raises(ConfigError) as ambiguous:
        show(seeded, STOPPED[:10], capsys=capsys)
    assert str(ambiguous.value) == f"run id {STOPPED[:10]} matches 2 runs: {STOPPED}, {TWIN}; give more of it"
    with pytest.raises(ConfigError, match=r"^no run 01zzz in ledger "):
        show(seeded, "01zzz", capsys=capsys)
    with pytest.raises(ConfigError, match="^no run 01%"):  # a LIKE wildcard is just a character
        show(seeded, "01%", capsys=capsys)


@backends
def test_the_report_tables_print_run_ids_that_show_accepts(seeded, capsys):
    out = report(seeded, "--by", "run", capsys=capsys)
    shown = {line.split()[0].rstrip(":") for line in out.splitlines() if line.startswith("01kbz")}
    assert shown == {STOPPED[:14], TWIN[:14]}
    assert max(len(line) for line in out.splitlines()) <= 80
    for prefix in shown:
        assert show(seeded, prefix, capsys=capsys).startswith(f"run {prefix}")


def test_an_unknown_or_ambiguous_run_is_one_line_and_exit_2_from_the_command_line(tmp_path):
    target = str(tmp_path / "ledger.db")
    with open_ledger(target) as ledger:
        for run_id in (STOPPED, TWIN):
            ledger.start_run(RunStart(run_id, "aider", ["aider"], "/w", "alice", "box", "2026-12-06T10:00:00Z", {}))
    for prefix, said in (("01kbz3m4q2", "matches 2 runs"), ("nope", "no run nope")):
        done = subprocess.run(
            [sys.executable, "-m", "capguard", "show", prefix, "--ledger", target], capture_output=True, text=True
        )
        assert done.returncode == 2 and done.stdout == ""
        assert done.stderr.count("\n") == 1 and said in done.stderr and "Traceback" not in done.stderr


@pytest.mark.agent
def test_show_tells_a_real_capped_aider_run_with_its_caps_origins(capguard, tmp_path):
    config = tmp_path / "xdg-config" / "capguard" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text('wall = "10m"\n')
    with FakeOpenAI(runaway_script(delay_s=0.3)) as server:
        result = capguard.run(
            ["--usd", "0.40"],
            [*aider_flags(server.base_url), "--no-fancy-input", "hello.py"],
            input="Please fix the greeting in hello.py\n" * 10,
        )
    assert result.rc == 122, result.stderr
    run_id = result.report["run_id"]
    assert result.report["cap_origins"]["usd"] == "flag --usd"
    env = {**capguard.env, "CAPGUARD_HOME": os.environ["CAPGUARD_HOME"]}
    done = subprocess.run(
        [sys.executable, "-m", "capguard", "show", run_id[:14]], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"run {run_id}: aider, stopped by the usd cap"
    assert any(re.fullmatch(r"  usd +\$0\.40  flag --usd", line) for line in lines)
    assert any(re.fullmatch(r"  wall +10m00s  config file( /.*)?", line) for line in lines)  # the path may wrap
    steps = result.report["steps"]
    replies = [line.split() for line in lines if re.match(r"  \d+ ", line)]
    assert len(replies) == steps and steps >= 3
    assert replies[-1][-1] == format_usd(round(result.report["cost_usd"] * 1e6))  # the total ends at the report's
    assert f"  why: {result.report['stop_detail']}" in lines
    assert all(f"  {step}" in done.stdout for step in result.report["stop_steps"][:1])
    assert "exit     122" in lines and all(len(line) <= 80 or "/" in line for line in lines)  # a long path stays whole
    data = json.loads(
        subprocess.run(
            [sys.executable, "-m", "capguard", "report", "--run", run_id[:14], "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
    )
    assert data["replies"][-1]["total_usd"] == pytest.approx(result.report["cost_usd"])
    assert data["report_file"].endswith(f"{run_id}/report.json")
    assert data["caps"]["wall"] == {"value": 600.0, "origin": f"config file {config}"}
    assert data["caps"]["usd"] == {"value": 0.4, "origin": "flag --usd"}


def test_a_run_the_ledger_never_closed_is_told_from_its_report_in_the_run_dir(seeded, capsys):
    run_dir = Path(os.environ["CAPGUARD_HOME"]) / "runs" / TWIN
    run_dir.mkdir(parents=True)
    report = {"notes": ["the ledger missed 2 replies (disk full); they are in the spool"], "stop_steps": []}
    (run_dir / "report.json").write_text(json.dumps({**report, "blind_spots": ["a reply in flight"]}))
    lines = show(seeded, TWIN, capsys=capsys).splitlines()
    assert "  - the ledger missed 2 replies (disk full); they are in the spool" in lines
    assert "  - a reply in flight" in lines and lines[-1] == f"report {run_dir / 'report.json'}"
