"""monthly.py and the monthly cap in caps.py: months in a time zone, standings, refusal, warnings, acks."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from capguard.core import monthly
from capguard.core.caps import EXIT_CODES, Caps, decide
from capguard.core.events import Reply
from capguard.core.meter import Meter
from capguard.core.monthly import Standing, month_of
from capguard.core.pricing import Priced

BERLIN = ZoneInfo("Europe/Berlin")
UTC = timezone.utc
MICRO = 1_000_000


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def standing(
    spent: float,
    cap: float = 500,
    *,
    scope: str = "user",
    name: str = "dev@example.com",
    acked: float | None = None,
    warn_at: float = 0.75,
    now: str = "2026-11-20T12:00:00+00:00",
) -> Standing:
    return Standing(
        scope,
        name,
        round(cap * MICRO),
        round(spent * MICRO),
        month_of(at(now), BERLIN),
        warn_at,
        None if acked is None else round(acked * MICRO),
    )


# --- months ------------------------------------------------------------------------------------------------------


def test_month_starts_and_resets_at_local_midnight_on_the_first():
    month = month_of(at("2026-11-20T12:00:00+00:00"), BERLIN)
    assert month.label == "2026-11"
    assert month.start_utc == at("2026-10-31T23:00:00+00:00")  # CET is UTC+1
    assert month.end_utc == at("2026-11-30T23:00:00+00:00")
    assert month.resets == "2026-12-01 00:00 Europe/Berlin"


def test_the_reset_is_exact_to_the_microsecond():
    before = month_of(at("2026-11-30T22:59:59.999999+00:00"), BERLIN)
    after = month_of(at("2026-11-30T23:00:00+00:00"), BERLIN)
    assert (before.label, after.label) == ("2026-11", "2026-12")
    assert before.end_utc == after.start_utc


def test_months_across_daylight_saving_time_keep_local_midnight():
    march = month_of(at("2026-03-15T12:00:00+00:00"), BERLIN)
    assert march.start_utc == at("2026-02-28T23:00:00+00:00")  # CET
    assert march.end_utc == at("2026-03-31T22:00:00+00:00")  # CEST since March 29
    assert march.end_utc - march.start_utc == timedelta(days=31, hours=-1)


def test_december_rolls_into_january_of_the_next_year():
    month = month_of(at("2026-12-31T22:59:59+00:00"), BERLIN)
    assert month.label == "2026-12" and month.end_utc == at("2026-12-31T23:00:00+00:00")
    assert month_of(at("2026-12-31T23:00:00+00:00"), BERLIN).label == "2027-01"


def test_the_same_instant_is_in_different_months_in_different_zones():
    instant = at("2026-11-30T23:30:00+00:00")
    assert month_of(instant, UTC).label == "2026-11"
    assert month_of(instant, BERLIN).label == "2026-12"
    assert month_of(instant, ZoneInfo("America/Los_Angeles")).label == "2026-11"


def test_a_naive_clock_is_refused():
    with pytest.raises(ValueError, match="time zone"):
        month_of(datetime(2026, 11, 20), BERLIN)


# --- standings -----------------------------------------------------------------------------------------------------


def test_standing_is_ok_below_the_soft_threshold():
    assert standing(374.99).state == "ok"


def test_standing_warns_from_the_soft_threshold():
    assert standing(375).state == "warn"
    assert standing(499.999999).state == "warn"


def test_standing_is_over_at_exactly_the_cap():
    assert standing(500).state == "over"
    assert standing(500).remaining_micro == 0


def test_an_ack_raises_the_limit_but_never_lowers_it_below_the_cap():
    assert standing(510, acked=625).limit_micro == 625 * MICRO
    assert standing(510, acked=625).state == "warn"
    assert standing(100, acked=50).limit_micro == 500 * MICRO


def test_remaining_is_the_smallest_remainder_of_every_budget():
    budgets = [standing(100), standing(900, cap=1000, scope="line", name="infra")]
    assert monthly.remaining(budgets) == 100 * MICRO
    assert monthly.remaining([]) is None


def test_a_standing_needs_a_positive_cap_and_a_known_scope():
    with pytest.raises(ValueError):
        standing(0, cap=0)
    with pytest.raises(ValueError):
        standing(0, scope="team")


# --- messages ------------------------------------------------------------------------------------------------------


def test_refusal_names_spent_cap_and_reset_and_how_to_ack():
    text = monthly.refusal([standing(503.12)])
    assert text == (
        "monthly cap reached: dev@example.com has spent $503.12 of the $500.00 monthly cap for 2026-11;"
        ' it resets 2026-12-01 00:00 Europe/Berlin. To go on this month: capguard ack --reason "..."'
    )
    assert "\n" not in text


def test_refusal_under_the_team_wrapper_names_its_ack_and_the_spent_line():
    text = monthly.refusal([standing(900, cap=800, scope="line", name="data team")], "capguard-team")
    assert text.endswith("To go on this month: capguard-team ack --line 'data team' --reason \"...\"")


def test_the_ack_command_is_capguard_team_only_under_the_team_wrapper():
    from capguard.budget.allowance import capguard_command

    assert capguard_command({"CAPGUARD_TEAM_CONFIG": "/etc/capguard/team.toml"}) == "capguard-team"
    assert capguard_command({}) == "capguard"


def test_refusal_names_a_spent_budget_line_and_an_acked_limit():
    text = monthly.refusal([standing(100), standing(1000, cap=800, scope="line", name="infra", acked=1000)])
    assert "budget line infra has spent $1,000.00 of the $1,000.00 limit (monthly cap $800.00, raised by ack)" in text
    assert "dev@example.com" not in text


def test_no_refusal_below_the_cap():
    assert monthly.refusal([standing(499.99)]) is None
    assert monthly.refusal([]) is None


def test_warning_past_the_soft_threshold_only():
    assert monthly.warnings([standing(374)]) == []
    assert monthly.warnings([standing(500)]) == []  # refused instead
    assert monthly.warnings([standing(380)]) == [
        "dev@example.com has spent $380.00 (76%) of the $500.00 monthly cap for 2026-11 (warning at 75%);"
        " it resets 2026-12-01 00:00 Europe/Berlin"
    ]


def test_status_line_shows_every_budget_of_the_month():
    [line] = monthly.status_lines([standing(380), standing(1001, cap=1000, scope="line", name="infra")])
    assert line.startswith("month 2026-11 (Europe/Berlin): dev@example.com: $380.00 of $500.00 (76%), $120.00 left ⚠")
    assert "budget line infra: $1,001.00 of $1,000.00 (100%), $0.00 left ✗ spent" in line
    assert line.endswith("resets 2026-12-01 00:00 Europe/Berlin")
    assert monthly.status_lines([]) == []


def test_month_as_json():
    data = monthly.as_json([standing(380)])
    assert data["month"] == "2026-11" and data["timezone"] == "Europe/Berlin"
    assert data["budgets"] == [
        {
            "scope": "user",
            "name": "dev@example.com",
            "state": "warn",
            "cap_usd": 500.0,
            "limit_usd": 500.0,
            "spent_usd": 380.0,
            "remaining_usd": 120.0,
            "warn_at": 0.75,
        }
    ]
    assert monthly.as_json([]) is None


# --- acks ----------------------------------------------------------------------------------------------------------


def test_ack_allows_a_quarter_of_the_cap_more_than_is_spent_now():
    assert monthly.ack_limit(standing(503)) == 628 * MICRO  # the $3 overshoot is not charged to the allowance


def test_ack_allows_a_given_amount():
    assert monthly.ack_limit(standing(503), 50 * MICRO) == 553 * MICRO
    with pytest.raises(ValueError):
        monthly.ack_limit(standing(503), 0)


# --- the monthly cap in caps.decide -------------------------------------------------------------------------------


def spent(cost: int) -> Meter:
    meter = Meter()
    meter.add_reply(Reply(key="r1", model="m", input_tokens=10), Priced("m", cost, "config"))
    return meter


def test_run_stops_with_reason_monthly_when_it_reaches_what_the_month_leaves():
    caps = Caps(monthly_remaining_micro=2_000_000)
    assert not decide(caps, spent(1_999_999), 0).stop
    verdict = decide(caps, spent(2_000_000), 0)
    assert verdict.reason == "monthly" and EXIT_CODES["monthly"] == 117


def test_the_smaller_of_the_run_cap_and_the_month_names_the_stop():
    assert decide(Caps(usd_micro=5_000_000, monthly_remaining_micro=2_000_000), spent(2_000_000), 0).reason == "monthly"
    assert decide(Caps(usd_micro=1_000_000, monthly_remaining_micro=2_000_000), spent(1_000_000), 0).reason == "usd"
    assert decide(Caps(usd_micro=2_000_000, monthly_remaining_micro=2_000_000), spent(2_000_000), 0).reason == "usd"


def test_a_month_spent_by_other_runs_stops_at_once():
    assert decide(Caps(monthly_remaining_micro=-5), Meter(), 0).reason == "monthly"


def test_an_unpriced_model_stops_a_run_under_a_monthly_cap_alone():
    meter = Meter()
    meter.add_reply(Reply(key="r1", model="m", input_tokens=10), Priced("m", None, None))
    assert decide(Caps(monthly_remaining_micro=1_000_000), meter, 0).reason == "unpriced"
    assert not decide(Caps(), meter, 0).stop


def test_caps_json_gives_the_month_in_dollars():
    assert Caps(monthly_remaining_micro=2_500_000).as_json()["monthly_remaining_usd"] == 2.5


def test_the_stop_line_of_a_monthly_stop_gives_what_the_month_left():
    from capguard.reports.run_report import RunFacts, build_report, stop_line

    caps = Caps(usd_micro=5_000_000, monthly_remaining_micro=300_000)
    facts = RunFacts(
        "r1",
        "aider",
        [],
        "/w",
        "u",
        "h",
        0,
        1,
        1.0,
        caps,
        spent(310_000),
        "monthly",
        None,
        at_stop={"cost_usd": 0.31, "monthly_remaining_usd": 0.30},
    )
    assert "cost $0.31 reached the $0.30 left of the monthly budget" in stop_line(facts)
    report = build_report(facts)
    assert report["overshoot"] == pytest.approx(0.01) and report["exit_code"] == 117
