"""report.py: the exit code a script sees, the one-line verdict, the JSON report."""

from __future__ import annotations

import json
import signal
from dataclasses import replace

import pytest

from capguard.core.caps import EXIT_CODES, Caps
from capguard.core.events import Reply
from capguard.core.meter import Meter
from capguard.core.pricing import Priced
from capguard.reports.run_report import RunFacts, build_report, exit_code, stop_line, write_json

STARTED = 1_798_761_600.0  # 2027-01-01T00:00:00Z


def meter(
    *,
    cost: int = 5_030_000,
    input_tokens: int = 800_000,
    output_tokens: int = 12_345,
    replies: int = 41,
    requests: int = 0,
) -> Meter:
    m = Meter()
    m.add_reply(
        Reply(
            key="r0",
            model="openai/gpt-4o",
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cache_read_tokens=100,
            cache_write_tokens=50,
        ),
        Priced("openai/gpt-4o", cost, "agent"),
    )
    for i in range(1, replies):
        m.add_reply(Reply(key=f"r{i}", model="openai/gpt-4o"), Priced("openai/gpt-4o", 0, None))
    for _ in range(requests):
        m.request_started()
    return m


def facts(**changes) -> RunFacts:
    base = RunFacts(
        run_id="01jrun",
        agent="aider",
        argv=["/usr/bin/aider", "--model", "openai/gpt-4o"],
        cwd="/home/dev/proj",
        user="dev@example.com",
        host="box",
        started_at=STARTED,
        ended_at=STARTED + 724.5,
        elapsed_s=724.3456,
        caps=Caps(usd_micro=5_000_000),
        meter=meter(),
        stop_reason="usd",
        agent_returncode=-15,
    )
    return replace(base, **changes)


# -- exit codes --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "code"),
    [("wall", 124), ("usd", 122), ("tokens", 121), ("steps", 120), ("map_tokens", 119), ("unpriced", 116)],
)
def test_cap_stop_exits_with_the_caps_documented_code(reason, code):
    assert exit_code(facts(stop_reason=reason, agent_returncode=-2)) == code


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_capguard_told_to_stop_exits_128_plus_the_signal(sig, code):
    assert exit_code(facts(stop_reason=None, signal_received=int(sig), agent_returncode=-int(sig))) == code


def test_cap_code_wins_over_a_signal_received_at_the_same_time():
    assert exit_code(facts(stop_reason="wall", signal_received=int(signal.SIGTERM))) == 124


@pytest.mark.parametrize("rc", [0, 1, 3, 42])
def test_agent_exiting_by_itself_passes_its_status_through(rc):
    assert exit_code(facts(stop_reason=None, agent_returncode=rc)) == rc


@pytest.mark.parametrize(("rc", "code"), [(-9, 137), (-15, 143), (-2, 130)])
def test_agent_killed_by_signal_n_exits_128_plus_n(rc, code):
    assert exit_code(facts(stop_reason=None, agent_returncode=rc)) == code


def test_unknown_agent_status_is_a_failure():
    assert exit_code(facts(stop_reason=None, agent_returncode=None)) == 1


# -- the one-line verdict ----------------------------------------------------------------------------


def test_usd_stop_line_names_the_cost_and_the_cap():
    line = stop_line(facts())
    assert line.startswith("capguard: stopped aider: cost $5.03 reached the $5.00 cap (")
    assert "41 replies" in line
    assert "812k tokens" in line
    assert "12m04s" in line
    assert line.endswith("; run 01jrun")


def test_a_single_reply_is_one_reply_in_the_stop_line():
    line = stop_line(facts(meter=meter(replies=1)))
    assert "(1 reply, " in line


def test_tokens_stop_line_names_the_tokens_and_the_cap():
    line = stop_line(facts(stop_reason="tokens", caps=Caps(tokens=800_000)))
    assert "812k tokens reached the 800k-token cap" in line


def test_wall_stop_line_names_the_time_and_the_cap():
    line = stop_line(facts(stop_reason="wall", caps=Caps(wall_s=720), elapsed_s=724.3))
    assert "wall-clock 12m04s reached the 12m00s cap" in line


def test_steps_stop_line_counts_replies_when_requests_are_not_announced():
    line = stop_line(facts(stop_reason="steps", caps=Caps(steps=3), meter=meter(replies=3)))
    assert "3 replies reached the 3-reply cap" in line


def test_steps_stop_line_names_the_reply_that_was_starting():
    line = stop_line(facts(stop_reason="steps", caps=Caps(steps=3), meter=meter(replies=3, requests=4)))
    assert "reply 4 was starting after the 3-reply cap" in line


def test_map_stop_line_names_the_map_size_and_the_cap():
    m = meter()
    m.map_measured(5_120)
    line = stop_line(facts(stop_reason="map_tokens", caps=Caps(map_tokens=4_096), meter=m))
    assert "a repo map of ~5,120 tokens exceeded the 4,096-token map cap" in line


def test_unpriced_stop_line_says_how_to_add_a_price():
    line = stop_line(facts(stop_reason="unpriced", model="openai/my-local-model"))
    assert "openai/my-local-model has no known price" in line
    assert '[prices."openai/my-local-model"]' in line


def test_signal_stop_line_names_the_signal():
    line = stop_line(facts(stop_reason=None, signal_received=int(signal.SIGTERM)))
    assert "capguard received SIGTERM" in line


def test_stop_line_quotes_the_figure_at_the_stop_and_the_total_after_it():
    # the cap fired at $5.01 after 40 replies; a reply in flight brought the run to $5.03 and 41 replies
    line = stop_line(facts(at_stop={"cost_usd": 5.01, "tokens": 790_000, "steps": 40}))
    assert "cost $5.01 reached the $5.00 cap" in line
    assert "(in all: 41 replies" in line


def test_tokens_stop_line_quotes_the_tokens_at_the_stop():
    line = stop_line(
        facts(
            stop_reason="tokens", caps=Caps(tokens=800_000), at_stop={"cost_usd": 5.0, "tokens": 801_000, "steps": 41}
        )
    )
    assert "801k tokens reached the 800k-token cap" in line
    assert "in all:" not in line  # no reply arrived after the stop


@pytest.mark.parametrize("reason", sorted(EXIT_CODES))
def test_every_stop_reason_is_worded_as_a_stop_not_an_exit(reason):
    line = stop_line(facts(stop_reason=reason, caps=Caps(usd_micro=1, tokens=1, wall_s=1, steps=1, map_tokens=1)))
    assert "the agent exited" not in line


# -- the JSON report ---------------------------------------------------------------------------------

REQUIRED = {
    "run_id",
    "agent",
    "argv",
    "cwd",
    "user",
    "host",
    "started_at",
    "ended_at",
    "elapsed_s",
    "caps",
    "usage",
    "cost_usd",
    "tokens",
    "steps",
    "stop_reason",
    "exit_code",
    "malformed_lines",
}


def test_report_has_every_documented_field():
    assert set(build_report(facts())) >= REQUIRED


def test_report_identifies_the_run():
    report = build_report(facts())
    assert (report["run_id"], report["agent"], report["cwd"], report["user"], report["host"]) == (
        "01jrun",
        "aider",
        "/home/dev/proj",
        "dev@example.com",
        "box",
    )
    assert report["argv"] == ["/usr/bin/aider", "--model", "openai/gpt-4o"]


def test_report_times_are_utc_iso_and_elapsed_is_rounded():
    report = build_report(facts())
    assert report["started_at"] == "2027-01-01T00:00:00.000Z"
    assert report["ended_at"] == "2027-01-01T00:12:04.500Z"
    assert report["elapsed_s"] == 724.346


def test_report_usage_is_by_model_with_every_token_kind():
    row = build_report(facts())["usage"]["openai/gpt-4o"]
    assert (row["input_tokens"], row["output_tokens"], row["cache_read_tokens"], row["cache_write_tokens"]) == (
        800_000,
        12_345,
        100,
        50,
    )
    assert row["cost_usd"] == 5.03


def test_report_totals_and_verdict():
    report = build_report(facts())
    assert (report["cost_usd"], report["tokens"], report["steps"]) == (5.03, 812_495, 41)
    assert (report["stop_reason"], report["exit_code"]) == ("usd", 122)
    assert report["caps"]["usd"] == 5.0
    assert "reached the $5.00 cap" in report["stop_detail"]


def test_report_counts_malformed_lines():
    m = meter()
    m.malformed_lines = 2
    assert build_report(facts(meter=m))["malformed_lines"] == 2


def test_report_overshoot_is_how_far_past_the_cap():
    assert build_report(facts())["overshoot"] == pytest.approx(0.03)
    tokens = build_report(facts(stop_reason="tokens", caps=Caps(tokens=800_000)))
    assert tokens["overshoot"] == 12_495


def test_report_of_an_agent_that_exited_has_no_stop_detail():
    report = build_report(facts(stop_reason=None, agent_returncode=0))
    assert (report["stop_reason"], report["stop_detail"], report["exit_code"], report["overshoot"]) == (
        None,
        None,
        0,
        None,
    )


def test_report_is_plain_json():
    report = build_report(facts(notes=["n"], blind_spots=["b"], warnings=["usd"]))
    assert json.loads(json.dumps(report)) == report


def test_write_json_creates_the_folder_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "deep" / "report.json"
    write_json(target, {"exit_code": 122})
    assert json.loads(target.read_text()) == {"exit_code": 122}
    assert [p.name for p in target.parent.iterdir()] == ["report.json"]
