"""Secrets and file modes, end to end: the real capguard CLI around the real aider against a fake OpenAI server.

An API key on aider's command line reaches aider and nothing capguard writes or prints; what capguard writes is
its user's only, whatever the umask.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from capguard.demo.fake_openai import FakeOpenAI, chat_script, runaway_script
from tests.integration.conftest import aider_flags, wait_for

pytestmark = pytest.mark.agent

OPENAI_KEY = "sk-SECRETcapguard0123456789abcdefOPENAI"
DEEPSEEK_KEY = "deepseekSECRET0123456789abcdef"
ANTHROPIC_KEY = "sk-ant-api03-SECRETcapguard0123456789ANTHROPIC"
SECRETS = (OPENAI_KEY, DEEPSEEK_KEY, ANTHROPIC_KEY, "SECRET")
RUNAWAY_INPUT = "Please fix the greeting in hello.py\n" * 10


def keyed_flags(base_url: str) -> list[str]:
    flags = aider_flags(base_url)
    flags[flags.index("sk-fake")] = OPENAI_KEY
    return [*flags, f"--anthropic-api-key={ANTHROPIC_KEY}", "--api-key", f"deepseek={DEEPSEEK_KEY}"]


def data_home(capguard) -> Path:
    return Path(os.environ["CAPGUARD_HOME"])


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


def assert_no_secret(text: str | bytes, where: str) -> None:
    for secret in SECRETS:
        needle = secret.encode() if isinstance(text, bytes) else secret
        assert needle not in text, f"{secret} found in {where}"


def _agent_cmdline(capguard) -> list[str] | None:
    for proc in capguard.survivors(wait=0):
        try:
            cmdline = proc.cmdline()
        except psutil.Error:
            continue
        if any("aider" in part for part in cmdline[:2]):
            return cmdline
    return None


def _status(capguard) -> str:
    return subprocess.run(
        [sys.executable, "-m", "capguard", "status", "--json"],
        cwd=capguard.repo,
        env=capguard.env,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout


def test_api_keys_on_the_command_line_reach_aider_and_nothing_capguard_writes_or_prints(capguard):
    with FakeOpenAI(runaway_script(delay_s=0.3)) as server:
        proc = capguard.start(
            ["--usd", "0.40"], [*keyed_flags(server.base_url), "--no-fancy-input", "hello.py"], stdin=subprocess.PIPE
        )
        try:
            proc.stdin.write(RUNAWAY_INPUT)
            proc.stdin.flush()  # communicate() closes it
            # the agent itself got the real keys
            cmdline = wait_for(lambda: _agent_cmdline(capguard), 60, "aider to start")
            assert OPENAI_KEY in cmdline and f"deepseek={DEEPSEEK_KEY}" in cmdline
            live = wait_for(lambda: json.loads(_status(capguard) or "[]"), 60, "capguard status to list the run")
            assert_no_secret(json.dumps(live), "capguard status --json")
            out, err = proc.communicate(timeout=180)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    result = capguard.result(proc.returncode, out, err)
    assert result.rc == 122, result.stderr
    assert "capguard: stopped aider: cost" in result.stderr
    assert_no_secret(result.stderr, "stderr")

    argv = result.report["argv"]
    assert argv[argv.index("--openai-api-key") + 1] == "<redacted>"
    assert "--anthropic-api-key=<redacted>" in argv and "deepseek=<redacted>" in argv
    assert argv[argv.index("--model") + 1] == "openai/gpt-4o"  # the rest of the command line is intact
    assert_no_secret(capguard.report_path.read_text(), "--report-json")

    home = data_home(capguard)
    with sqlite3.connect(home / "ledger.db") as db:
        stored_argv, stored_report = db.execute("SELECT argv, report FROM runs").fetchone()
    assert json.loads(stored_argv) == argv
    assert_no_secret(stored_argv + stored_report, "the ledger's runs row")
    run_dir = home / "runs" / result.report["run_id"]
    for name in ("report.json", "status.json", "capguard.log"):
        assert (run_dir / name).exists(), name
    for path in files_under(home):  # ledger (and its WAL), report, status, log: every byte capguard keeps
        assert_no_secret(path.read_bytes(), str(path))


@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_what_capguard_writes_is_private_whatever_the_umask(capguard, umask):
    home = data_home(capguard)
    with FakeOpenAI(runaway_script(delay_s=0.3)) as server:
        proc = capguard.start(
            ["--usd", "0.40"],
            [*aider_flags(server.base_url), "--no-fancy-input", "hello.py"],
            stdin=subprocess.PIPE,
            umask=umask,
        )
        try:
            proc.stdin.write(RUNAWAY_INPUT)
            proc.stdin.flush()  # communicate() closes it
            # mid-run: the ledger's -wal and -shm exist while capguard holds the ledger open
            status = wait_for(lambda: next(home.glob("runs/*/status.json"), None), 60, "status.json")
            wait_for(lambda: (home / "ledger.db-wal").exists() and (home / "ledger.db-shm").exists(), 30, "the WAL")
            mid_run = {
                p.name: _mode(p)
                for p in (
                    home / "ledger.db",
                    home / "ledger.db-wal",
                    home / "ledger.db-shm",
                    status,
                    status.parent / "capguard.log",
                )
            }
            out, err = proc.communicate(timeout=180)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 122, err
    assert mid_run == {
        "ledger.db": 0o600,
        "ledger.db-wal": 0o600,
        "ledger.db-shm": 0o600,
        "status.json": 0o600,
        "capguard.log": 0o600,
    }
    run_dir = status.parent
    assert {p: _mode(p) for p in (home, home / "runs", run_dir)} == {home: 0o700, home / "runs": 0o700, run_dir: 0o700}
    for path in (
        home / "ledger.db",
        run_dir / "report.json",
        run_dir / "status.json",
        run_dir / "capguard.log",
        capguard.report_path,
    ):
        assert _mode(path) == 0o600, path

    # capguard import writes its state file in the data dir
    imported = subprocess.run(
        [sys.executable, "-m", "capguard", "import", "aider", str(run_dir), "--quiet"],
        cwd=capguard.repo,
        env=capguard.env,
        capture_output=True,
        text=True,
        timeout=120,
        umask=umask,
    )
    assert imported.returncode == 0, imported.stderr
    assert _mode(home / "import-state.json") == 0o600


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_an_open_data_dir_and_ledger_are_tightened_with_one_note(capguard):
    home = data_home(capguard)
    home.mkdir(parents=True)
    os.chmod(home, 0o755)
    (home / "ledger.db").touch()
    os.chmod(home / "ledger.db", 0o644)
    with FakeOpenAI(chat_script()) as server:
        result = capguard.run([], [*aider_flags(server.base_url), "--message", "hi"])
    assert result.rc == 0, result.stderr
    assert _mode(home) == 0o700 and _mode(home / "ledger.db") == 0o600
    notes = [line for line in result.stderr.splitlines() if line.startswith("capguard: note:")]
    assert notes == [
        f"capguard: note: {home} was open to other users (mode 0755); capguard made it 0700",
        f"capguard: note: {home / 'ledger.db'} was open to other users (mode 0644); capguard made it 0600",
    ]
    assert "Traceback" not in result.stderr


def test_a_dsn_password_is_masked_in_config_and_errors(capguard):
    url = "postgresql://capguard:hunter2SECRET@127.0.0.1:9/ledger"
    env = {**capguard.env, "CAPGUARD_LEDGER": url}
    shown = subprocess.run(
        [sys.executable, "-m", "capguard", "config"],
        cwd=capguard.repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert "postgresql://capguard:<redacted>@127.0.0.1:9/ledger" in shown.stdout
    as_json = subprocess.run(
        [sys.executable, "-m", "capguard", "config", "--json"],
        cwd=capguard.repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (
        json.loads(as_json.stdout)["values"]["ledger"]["value"] == "postgresql://capguard:<redacted>@127.0.0.1:9/ledger"
    )
    for command in (["ledger", "path"], ["ledger", "status"], ["report"]):
        failed = subprocess.run(
            [sys.executable, "-m", "capguard", *command],
            cwd=capguard.repo,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert failed.returncode == 3, failed.stderr
        assert "contains a password" in failed.stderr and "Traceback" not in failed.stderr
        assert "hunter2" not in failed.stdout + failed.stderr
    keyword = subprocess.run(
        [sys.executable, "-m", "capguard", "ledger", "path"],
        cwd=capguard.repo,
        env={**capguard.env, "CAPGUARD_LEDGER": "host=db password=hunter2SECRET"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert keyword.returncode == 3 and "looks like a libpq connection string" in keyword.stderr
    assert "hunter2" not in keyword.stderr and not (capguard.repo / "host=db password=hunter2SECRET").exists()
