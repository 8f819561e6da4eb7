"""Claude Code's statusLine command under capguard: re-run on a timer, it shows the run's latest status and
records Claude's live total once per change (an idle session's refreshes add nothing to the file)."""

from __future__ import annotations

import json
import subprocess
import sys

from capguard.agents.claude.adapter import STATUSLINE_REFRESH_S


def statusline(run_dir, doc: dict) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "capguard.agents.claude.statusline", str(run_dir)],
        input=json.dumps(doc).encode(),
        capture_output=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.decode().strip()


def test_a_refresh_shows_the_latest_status_and_records_each_total_once(tmp_path):
    doc = {"session_id": "s1", "cost": {"total_cost_usd": 0.25, "total_duration_ms": 1000}}
    (tmp_path / "status.json").write_text(json.dumps({"summary": "$0.25/$5.00 · 1.0s/30m00s", "warnings": []}))
    assert statusline(tmp_path, doc) == "capguard $0.25/$5.00 · 1.0s/30m00s"
    (tmp_path / "status.json").write_text(json.dumps({"summary": "$0.25/$5.00 · 3.0s/30m00s", "warnings": []}))
    idle = {**doc, "cost": {"total_cost_usd": 0.25, "total_duration_ms": 3000}}  # the timer's: same total
    assert statusline(tmp_path, idle) == "capguard $0.25/$5.00 · 3.0s/30m00s"  # the elapsed time moved on
    lines = (tmp_path / "claude.statusline.jsonl").read_text().splitlines()
    assert [json.loads(line)["cost"]["total_cost_usd"] for line in lines] == [0.25]  # not twice
    statusline(tmp_path, {**doc, "cost": {"total_cost_usd": 0.5}})
    statusline(tmp_path, {"not": "a statusline document"})  # unreadable: kept for the parser to flag
    lines = (tmp_path / "claude.statusline.jsonl").read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[1])["cost"]["total_cost_usd"] == 0.5


def test_claude_is_asked_to_refresh_the_status_line_on_a_timer(tmp_path, monkeypatch):
    from capguard.agents.claude.adapter import ClaudeAdapter
    from capguard.config.settings import load_settings

    fake = tmp_path / "claude"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    env = {"PATH": str(tmp_path), "HOME": str(tmp_path), "CLAUDE_CONFIG_DIR": str(tmp_path / "cc"), "OTEL_X": "1"}
    monkeypatch.chdir(tmp_path)
    plan = ClaudeAdapter().plan([], load_settings("claude", env={}), tmp_path, env, "r1")
    settings = json.loads(plan.argv[plan.argv.index("--settings") + 1])
    assert settings["statusLine"]["refreshInterval"] == STATUSLINE_REFRESH_S == 2
