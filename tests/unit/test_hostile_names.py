"""Names from outside (models, tools, users, projects) printed safely; metering that breaks stops the run, never capguard."""

from __future__ import annotations

import csv
import io

from capguard.agents.base import LaunchPlan
from capguard.cli import report_cmd
from capguard.core.caps import Caps
from capguard.core.events import MapMeasured, Reply
from capguard.core.meter import Meter
from capguard.core.pricing import Priced, Pricer
from capguard.core.sanitize import MAX_TOKENS
from capguard.reports import render
from capguard.reports.aggregate import Part, Run
from capguard.reports.run_report import RunFacts, build_report, stop_line
from capguard.supervisor.supervise import Supervisor

ANSI_MODEL = "\x1b[2J\x1b[1;1Hgpt-4o\x07"  # clear the screen, home the cursor, ring the bell


def facts(meter: Meter, **kw) -> RunFacts:
    base = dict(
        run_id="01jrun",
        agent="aider",
        argv=["aider"],
        cwd="/p",
        user="u",
        host="h",
        started_at=0.0,
        ended_at=1.0,
        elapsed_s=1.0,
        caps=Caps(tokens=1000),
        meter=meter,
        stop_reason="tokens",
        agent_returncode=-15,
    )
    return RunFacts(**{**base, **kw})


def test_the_stop_line_escapes_a_hostile_tool_call_and_names_suspicious_lines():
    meter = Meter()
    meter.add_reply(
        Reply(
            key="k",
            model=ANSI_MODEL,
            input_tokens=MAX_TOKENS,
            source="a.jsonl",
            offset=7,
            suspicious="prompt_tokens at or beyond capguard's bound",
        ),
        Priced(ANSI_MODEL, 5, "agent"),
    )
    meter.failing_tool, meter.failing_streak = 'Bash \x1b]0;pwned\x07{"command":"x"}', 5
    line = stop_line(facts(meter, stop_reason="stuck"))
    assert "\x1b" not in line and "\x07" not in line and "\\x1b]0;pwned\\x07" in line
    assert "1 line with figures beyond capguard's bounds, counted as the bound" in line
    report = build_report(facts(meter))
    assert report["suspicious_lines"] == 1
    assert report["suspicious"] == [
        {"source": "a.jsonl", "offset": 7, "why": "prompt_tokens at or beyond capguard's bound"}
    ]


def test_a_meter_error_with_control_characters_is_one_printable_line():
    meter = Meter()
    meter.fail("ValueError while metering Reply from x: bad\nsecond line \x1b[31m")
    line = stop_line(facts(meter, stop_reason="meter_error"))
    assert "\n" not in line and "\x1b" not in line and "capguard could not count any more: ValueError" in line


def _report(by: str) -> render.Report:
    runs = {
        "r1": Run(
            "r1",
            "=cmd|' /C calc'!A0",
            "claude",
            "\x1b[31m/src/app",
            None,
            "exited",
            None,
            "2026-11-02T10:00:00.000000Z",
            "2026-11-02T10:30:00.000000Z",
            None,
        )
    }
    parts = [Part("r1", ANSI_MODEL if by == "model" else None, 5_000_000, 1_000, 10, 2)]
    return report_cmd.build(by, runs, parts, "all time", "/tmp/ledger.db", 5)


def test_text_reports_escape_names_from_outside():
    for by in ("model", "user", "project"):
        text = "\n".join(render.text(_report(by)))
        assert "\x1b" not in text and "\x07" not in text, by
    assert "\\x1b[2J" in "\n".join(render.text(_report("model")))


def test_csv_reports_guard_formulas_and_escape_names():
    rows = list(csv.reader(io.StringIO(render.as_csv(_report("user")))))
    assert rows[1][0] == "'=cmd|' /C calc'!A0"
    rows = list(csv.reader(io.StringIO(render.as_csv(_report("model")))))
    assert rows[1][0] == "\\x1b[2J\\x1b[1;1Hgpt-4o\\x07"


class _BrokenPricer(Pricer):
    def price(self, reply: Reply) -> Priced:
        raise ArithmeticError("decimal.InvalidOperation: [<class 'decimal.InvalidOperation'>]")


def test_metering_that_raises_stops_the_run_with_meter_error_and_counts_the_rest():
    supervisor = Supervisor(
        LaunchPlan(argv=["true"], env={}, watches=[]), Caps(usd_micro=5_000_000), _BrokenPricer(), name="aider"
    )
    verdict = supervisor._process(
        [Reply(key="k", model="m", input_tokens=5, source="a.jsonl", offset=40), MapMeasured(1234)], enforce=True
    )
    assert verdict.stop and verdict.reason == "meter_error"
    assert supervisor.meter.meter_error.startswith("ArithmeticError while metering Reply from a.jsonl at byte 40")
    assert supervisor.meter.map_tokens == 1234  # the events after the bad one were still counted
