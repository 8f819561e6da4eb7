"""`capguard import codex` on Codex 0.169.1's real rollout files (tests/fixtures/codex): one run per thread, the
live parser's totals, a fork's and its parent's replies once each, incremental on a resumed (appended) file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from capguard.agents.codex.logs import RolloutParser
from capguard.core.events import Reply
from capguard.core.meter import Meter
from capguard.core.pricing import Pricer
from tests.integration.test_import import _home, imported, ledger_target, rows, spend  # noqa: F401  (fixtures)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "codex"
PRICED = "gpt-5"


def sessions(tmp_path: Path, names: list[str]) -> Path:
    """A Codex home whose rollouts are the fixtures, under their date folder, priced as gpt-5."""
    home = tmp_path / "codex-home"
    for name in names:
        lines = (FIXTURES / f"rollout.{name}.jsonl").read_text().replace('"fake-model"', f'"{PRICED}"')
        meta = json.loads(lines.splitlines()[0])["payload"]
        day = home / "sessions" / "2026" / "12" / "06"
        day.mkdir(parents=True, exist_ok=True)
        (day / f"rollout-2026-12-06T21-35-36-{meta['id']}.jsonl").write_text(lines)
    return home


def parsed(paths: list[Path]) -> Meter:
    meter, pricer = Meter(), Pricer()
    for path in paths:
        parser = RolloutParser(str(path))
        data, start = path.read_bytes(), 0
        while (end := data.find(b"\n", start)) >= 0:
            for event in parser.feed(data[start:end], start):
                if isinstance(event, Reply):
                    meter.add_reply(event, pricer.price(event))
            start = end + 1
    return meter


def test_codex_import_equals_the_parsers_totals_one_run_per_thread(ledger_target, capsys, tmp_path):
    names = ["tool", "sigint-tool", "cut", "fork-parent", "fork-child"]
    home = sessions(tmp_path, names)
    summary = imported(ledger_target, "codex", [home], capsys)
    files = sorted(home.rglob("rollout-*.jsonl"))
    meter = parsed(files)
    billed = sum(
        len([b for b in json.loads((FIXTURES / f"billed.{n}.json").read_text()) if b["billed"]]) for n in names
    )
    assert summary["files_read"] == len(files) and summary["sessions"] == len(files)
    assert summary["replies_added"] == billed and summary["malformed_lines"] == 0
    assert spend(ledger_target) == (meter.replies_micro, meter.tokens)
    assert meter.replies_micro > 0
    runs = rows(ledger_target, "SELECT id, agent, steps, tokens FROM runs ORDER BY id")
    assert {r["agent"] for r in runs} == {"codex"} and all(r["id"].startswith("codex-") for r in runs)
    assert sum(r["tokens"] for r in runs) == meter.tokens
    again = imported(ledger_target, "codex", [home], capsys)
    assert again["files_unchanged"] == len(files) and again["replies_added"] == 0


def test_a_resumed_thread_appended_to_its_file_adds_only_the_new_replies(ledger_target, capsys, tmp_path):
    home = sessions(tmp_path, ["tool"])
    [path] = home.rglob("rollout-*.jsonl")
    full = path.read_bytes()
    lines = full.splitlines(keepends=True)
    cut = next(i for i, line in enumerate(lines) if b'"token_usage_record"' in line) + 1  # after the first reply
    path.write_bytes(b"".join(lines[:cut]))
    first = imported(ledger_target, "codex", [home], capsys)
    assert first["replies_added"] == 1
    path.write_bytes(full)
    second = imported(ledger_target, "codex", [home], capsys)
    assert second["replies_added"] == 1 and second["sessions"] == 1
    assert second["bytes_read"] < len(full)  # read on from the last turn_context, not from the top
    meter = parsed([path])
    assert spend(ledger_target) == (meter.replies_micro, meter.tokens)
    assert rows(ledger_target, "SELECT COUNT(*) AS n FROM runs")[0]["n"] == 1


def test_a_bad_line_is_skipped_and_counted(ledger_target, capsys, tmp_path):
    home = sessions(tmp_path, ["tool"])
    [path] = home.rglob("rollout-*.jsonl")
    with open(path, "ab") as handle:
        handle.write(b'{"type":"token_usage_record","payload":{"response_id":"x","usage":{"input_tokens":"lots"}}}\n')
    summary = imported(ledger_target, "codex", [home], capsys)
    assert summary["malformed_lines"] == 1 and summary["replies_added"] == 2


@pytest.mark.parametrize("where", ["env", "arg"])
def test_the_default_home_is_codex_home(ledger_target, capsys, tmp_path, monkeypatch, where):
    home = sessions(tmp_path, ["tool"])
    shutil.copytree(home, tmp_path / "other")
    if where == "env":
        monkeypatch.setenv("CODEX_HOME", str(home))
        summary = imported(ledger_target, "codex", [], capsys)
    else:
        summary = imported(ledger_target, "codex", [home / "sessions"], capsys)
    assert summary["files_read"] == 1 and summary["replies_added"] == 2
