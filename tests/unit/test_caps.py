"""caps.py: ok, warn past warn_at, stop at 100% of any cap; steps and unpriced policies."""

from __future__ import annotations

import json

import pytest

from capguard.core.caps import EXIT_CODES, OK, Caps, Verdict, decide, seconds_until_wall
from capguard.core.enums import StopReason, UnpricedPolicy
from capguard.core.events import Reply
from capguard.core.meter import Meter
from capguard.core.pricing import Priced


def meter(
    *, cost: int = 0, tokens: int = 0, replies: int = 1, requests: int = 0, unpriced: bool = False, map_tokens: int = 0
) -> Meter:
    """A meter after `replies` replies sharing `cost` micro-dollars and `tokens` tokens."""
    m = Meter()
    for i in range(replies):
        share_cost = cost if i == 0 else 0
        share_tokens = tokens if i == 0 else 0
        m.add_reply(
            Reply(key=f"r{i}", model="m", input_tokens=share_tokens),
            Priced("m", None if unpriced else share_cost, None if unpriced else "config"),
        )
    for _ in range(requests):
        m.request_started()
    m.map_measured(map_tokens)
    return m


def test_no_caps_is_always_ok():
    assert decide(Caps(), meter(cost=10**12, tokens=10**9, replies=50), 10**6) == OK


def test_usd_below_warn_threshold_is_ok():
    assert decide(Caps(usd_micro=5_000_000), meter(cost=3_999_999), 0) == OK


def test_usd_at_warn_threshold_warns():
    verdict = decide(Caps(usd_micro=5_000_000), meter(cost=4_000_000), 0)
    assert verdict.action == "warn"
    assert verdict.warnings == ("usd",)
    assert not verdict.stop


def test_usd_just_below_cap_only_warns():
    assert decide(Caps(usd_micro=5_000_000), meter(cost=4_999_999), 0).action == "warn"


def test_usd_at_cap_stops():
    verdict = decide(Caps(usd_micro=5_000_000), meter(cost=5_000_000), 0)
    assert verdict == Verdict("stop", "usd")
    assert verdict.stop


def test_usd_over_cap_stops():
    assert decide(Caps(usd_micro=5_000_000), meter(cost=7_000_000), 0).reason == "usd"


def test_tokens_at_cap_stop():
    assert decide(Caps(tokens=1_000), meter(tokens=1_000), 0).reason == "tokens"


def test_tokens_past_warn_at_warn():
    assert decide(Caps(tokens=1_000), meter(tokens=850), 0).warnings == ("tokens",)


def test_wall_clock_at_cap_stops():
    assert decide(Caps(wall_s=60), Meter(), 60.0).reason == "wall"


def test_wall_clock_past_warn_at_warns():
    assert decide(Caps(wall_s=60), Meter(), 50.0).warnings == ("wall",)


def test_custom_warn_at_moves_the_threshold():
    caps = Caps(usd_micro=1_000_000, warn_at=0.5)
    assert decide(caps, meter(cost=499_999), 0) == OK
    assert decide(caps, meter(cost=500_000), 0).warnings == ("usd",)


def test_warn_at_one_never_warns_before_the_stop():
    assert decide(Caps(usd_micro=1_000_000, warn_at=1.0), meter(cost=999_999), 0) == OK


def test_warnings_list_every_cap_past_its_threshold():
    verdict = decide(Caps(usd_micro=100, tokens=100, wall_s=100), meter(cost=90, tokens=90), 90)
    assert set(verdict.warnings) == {"usd", "tokens", "wall"}


def test_steps_cap_stops_when_the_last_reply_ends_if_requests_are_not_announced():
    caps = Caps(steps=3)
    assert decide(caps, meter(replies=2), 0).action == "ok"
    assert decide(caps, meter(replies=3), 0).reason == "steps"


def test_steps_cap_lets_the_last_reply_finish_when_requests_are_announced():
    # aider writes message_send_starting: reply 3 of 3 has ended and no fourth request started yet
    assert not decide(Caps(steps=3), meter(replies=3, requests=3), 0).stop


def test_steps_cap_stops_when_the_request_after_the_cap_starts():
    assert decide(Caps(steps=3), meter(replies=3, requests=4), 0).reason == "steps"


def test_steps_past_warn_at_warn():
    assert decide(Caps(steps=10), meter(replies=8), 0).warnings == ("steps",)


def test_map_at_the_cap_is_allowed():
    assert not decide(Caps(map_tokens=4_096), meter(map_tokens=4_096), 0).stop


def test_map_above_the_cap_stops():
    assert decide(Caps(map_tokens=4_096), meter(map_tokens=4_097), 0).reason == "map_tokens"


def test_unpriced_reply_stops_when_a_usd_cap_cannot_be_enforced():
    assert decide(Caps(usd_micro=5_000_000, unpriced="stop"), meter(unpriced=True), 0).reason == "unpriced"


def test_unpriced_reply_is_fine_without_a_usd_cap():
    assert decide(Caps(tokens=10**6, unpriced="stop"), meter(unpriced=True, tokens=10), 0) == OK


def test_unpriced_reply_with_tokens_only_policy_neither_stops_nor_warns():
    assert decide(Caps(usd_micro=5_000_000, unpriced="tokens-only"), meter(unpriced=True), 0) == OK


def test_unpriced_reply_with_tokens_only_policy_still_enforces_the_token_cap():
    caps = Caps(usd_micro=5_000_000, tokens=100, unpriced="tokens-only")
    assert decide(caps, meter(unpriced=True, tokens=100), 0).reason == "tokens"


def test_unpriced_reply_with_warn_policy_warns():
    verdict = decide(Caps(usd_micro=5_000_000, unpriced="warn"), meter(unpriced=True), 0)
    assert verdict.action == "warn"
    assert "unpriced" in verdict.warnings


def test_seconds_until_wall_counts_down_and_never_goes_negative():
    assert seconds_until_wall(Caps(wall_s=60), 45) == 15
    assert seconds_until_wall(Caps(wall_s=60), 75) == 0.0


def test_seconds_until_wall_is_none_without_a_wall_cap():
    assert seconds_until_wall(Caps(), 45) is None


@pytest.mark.parametrize("field", ["usd_micro", "tokens", "wall_s", "steps"])
@pytest.mark.parametrize("value", [0, -1])
def test_caps_must_be_positive(field, value):
    with pytest.raises(ValueError, match=field):
        Caps(**{field: value})


def test_map_cap_of_zero_is_allowed_and_negative_is_not():
    assert Caps(map_tokens=0).map_tokens == 0
    with pytest.raises(ValueError, match="map_tokens"):
        Caps(map_tokens=-1)


@pytest.mark.parametrize("warn_at", [0, -0.1, 1.01])
def test_warn_at_must_lie_in_zero_one(warn_at):
    with pytest.raises(ValueError, match="warn_at"):
        Caps(warn_at=warn_at)


def test_unknown_unpriced_policy_is_refused():
    with pytest.raises(ValueError, match="unpriced"):
        Caps(unpriced="ignore")


def test_caps_json_gives_dollars():
    assert Caps(usd_micro=2_500_000, steps=3).as_json() == {
        "usd": 2.5,
        "tokens": None,
        "wall_s": None,
        "steps": 3,
        "map_tokens": None,
        "stuck": None,
        "warn_at": 0.8,
        "unpriced": "stop",
        "monthly_remaining_usd": None,
        "models": [],
    }


def test_every_stop_reason_has_its_own_exit_code():
    assert set(EXIT_CODES) == set(StopReason)
    assert len(set(EXIT_CODES.values())) == len(EXIT_CODES)
    assert EXIT_CODES["wall"] == 124


def test_a_stop_reason_reads_as_its_plain_name_in_text_json_and_lookups():
    reason = decide(Caps(usd_micro=1), meter(cost=1), 0).reason
    assert reason is StopReason.USD and reason == "usd"
    assert f"the {reason} cap" == "the usd cap" and str(reason) == "usd" and f"{reason:>4}" == " usd"
    assert json.dumps({"stop_reason": reason}) == '{"stop_reason": "usd"}'
    assert EXIT_CODES["usd"] == EXIT_CODES[StopReason.USD] == 122


def test_an_unpriced_policy_given_as_text_is_held_as_the_enum():
    assert Caps(unpriced="warn").unpriced is UnpricedPolicy.WARN
    assert Caps(unpriced="tokens-only") == Caps(unpriced=UnpricedPolicy.TOKENS_ONLY)
    with pytest.raises(ValueError, match="unpriced must be one of stop, tokens-only, warn"):
        Caps(unpriced="sometimes")


def test_a_meter_that_cannot_count_stops_the_run_whatever_the_caps():
    meter = Meter()
    meter.fail("the analytics log became unreadable")
    meter.fail("a later cause")  # the first cause is kept
    verdict = decide(Caps(), meter, 0.0)
    assert verdict.stop and verdict.reason == "meter_error"
    assert meter.meter_error == "the analytics log became unreadable"
