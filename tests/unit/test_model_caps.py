"""[models]: caps per model (a glob), allowed and denied models; parsed with errors naming file and key, and
decided by the files meter's cap policy as by the proxy."""

from __future__ import annotations

import pytest

from capguard.core.caps import EXIT_CODES, Caps, decide
from capguard.core.enums import Action, StopReason
from capguard.core.errors import ConfigError
from capguard.core.events import Reply
from capguard.core.meter import Meter
from capguard.core.model_caps import ModelCap, ModelRules, matches, parse_layers, refusal
from capguard.core.pricing import Priced


@pytest.mark.parametrize(
    ("pattern", "model", "hit"),
    [
        ("claude-opus-*", "claude-opus-4-1", True),
        ("claude-opus-*", "anthropic/claude-opus-4-1", True),
        ("Claude-Opus-*", "anthropic/claude-opus-4-1", True),
        ("anthropic/*", "anthropic/claude-opus-4-1", True),
        ("claude-opus-*", "claude-sonnet-4-5", False),
        ("gpt-4o", "gpt-4o-mini", False),
        ("gpt-4o", None, False),
    ],
)
def test_a_glob_matches_the_name_with_or_without_its_provider(pattern, model, hit):
    assert matches(pattern, model) is hit


def test_layers_parse_caps_and_lists_later_files_winning():
    rules = parse_layers(
        [
            ("user.toml", {"deny": ["*-preview"], "claude-opus-*": {"usd": 5}}),
            ("repo.toml", {"claude-opus-*": {"usd": "$2", "tokens": "1.5M"}, "allow": ["claude-*"]}),
        ]
    )
    assert rules.caps == (ModelCap("claude-opus-*", 2_000_000, 1_500_000, "repo.toml"),)
    assert rules.allow == ("claude-*",) and rules.deny == ("*-preview",)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"claude-opus-*": {"usd": -1}}, r'repo.toml: models."claude-opus-\*".usd: .*non-negative'),
        ({"claude-opus-*": {"usd": 0}}, r'models."claude-opus-\*".usd: .*greater than zero'),
        ({"claude-opus-*": {"dollars": 1}}, r'models."claude-opus-\*".dollars: unknown key \(known: usd, tokens\)'),
        ({"claude-opus-*": {"tokens": "lots"}}, r'models."claude-opus-\*".tokens: .*not a token count'),
        ({"deny": "claude-opus-*"}, r"repo.toml: models.deny: expected a list"),
        ({"claude-opus-*": 2}, r"repo.toml: models.claude-opus-\*: expected allow, deny or a table"),
    ],
)
def test_a_bad_entry_is_one_error_naming_file_and_key(table, message):
    with pytest.raises(ConfigError, match=message):
        parse_layers([("repo.toml", table)])


def test_deny_beats_allow_and_an_allow_list_refuses_the_rest():
    rules = ModelRules(allow=("claude-*",), deny=("claude-opus-*",))
    assert "denied" in (refusal(rules, "claude-opus-4-1") or "")
    assert "not in the allowed models" in (refusal(rules, "gpt-4o") or "")
    assert refusal(rules, "anthropic/claude-sonnet-4-5") is None


def add(meter: Meter, key: str, model: str, cost: int, tokens: int = 10) -> None:
    meter.add_reply(Reply(key, model, input_tokens=tokens), Priced(model, cost, "genai-prices"))


def test_the_files_meter_stops_when_the_models_under_one_cap_reach_it():
    caps = Caps(usd_micro=10_000_000, models=(ModelCap("claude-opus-*", usd_micro=2_000_000),))
    meter = Meter()
    add(meter, "a", "anthropic/claude-opus-4-1", 1_500_000)
    add(meter, "b", "anthropic/claude-sonnet-4-5", 3_000_000)  # another model: not this cap's
    assert decide(caps, meter, 1.0).action != Action.STOP
    add(meter, "c", "claude-opus-4-5", 500_000)  # the glob adds up every model it names
    verdict = decide(caps, meter, 1.0)
    assert verdict.stop and verdict.reason == StopReason.MODEL and EXIT_CODES[StopReason.MODEL] == 114


def test_a_token_cap_per_model_counts_that_models_tokens_only():
    caps = Caps(models=(ModelCap("gpt-4o*", tokens=1_000),))
    meter = Meter()
    add(meter, "a", "openai/gpt-5", 0, tokens=5_000)
    assert not decide(caps, meter, 1.0).stop
    add(meter, "b", "openai/gpt-4o-mini", 0, tokens=1_000)
    assert decide(caps, meter, 1.0).reason == StopReason.MODEL


def test_the_report_names_the_model_cap_and_its_overshoot():
    from capguard.reports.run_report import RunFacts, build_report, why

    caps = Caps(models=(ModelCap("claude-opus-*", usd_micro=2_000_000),))
    meter = Meter()
    add(meter, "a", "anthropic/claude-opus-4-1", 2_100_000)
    facts = RunFacts("r", "claude", [], "/", "u", "h", 0.0, 1.0, 1.0, caps, meter, StopReason.MODEL, None)
    assert why(facts) == "claude-opus-* cost $2.10 reached its $2.00 cap"
    assert build_report(facts)["overshoot"] == pytest.approx(0.1)


def test_a_long_model_name_cannot_slip_past_a_deny_glob():
    rules = ModelRules(deny=("*-preview",))
    long_name = "claude-" + "x" * 300 + "-preview"
    why = refusal(rules, long_name, long_name[:100])
    assert why is not None and long_name not in why  # matched on the whole name, shown short
