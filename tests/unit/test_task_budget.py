"""Claude's task budget: which models take one, what each request carries, how `remaining` carries over."""

from __future__ import annotations

import pytest

from capguard.core.task_budget import BETA, MIN_TOTAL, TaskBudget, check_total, supports_task_budget, with_task_budget


@pytest.mark.parametrize(
    "model",
    [
        "claude-opus-4-7",
        "claude-opus-4-8",
        "claude-opus-4.8-fast",
        "claude-opus-5",
        "claude-opus-5-5",
        "claude-sonnet-5-5",
        "claude-haiku-5-5",
        "claude-fable-5",
        "claude-fable-5-1",
        "claude-mythos-5-2",
        "claude-opus-4-7-20260416",
        "anthropic/claude-opus-4-7",
        "anthropic.claude-opus-5-5-v1:0",
        "claude-sonnet-6",
        "claude-newfamily-6-1",
        "CLAUDE-OPUS-4-7",
    ],
)
def test_models_that_take_a_task_budget(model):
    assert supports_task_budget(model)


@pytest.mark.parametrize(
    "model",
    [
        "claude-opus-4-6",
        "claude-opus-4-5",
        "claude-opus-4-20250514",
        "claude-sonnet-5",
        "claude-sonnet-4-5",
        "claude-haiku-4-5",
        "claude-3-7-sonnet-latest",
        "claude-3-opus",
        "gpt-5",
        "",
        None,
        "claude-newfamily-5-9",
    ],
)
def test_models_left_untouched(model):
    assert not supports_task_budget(model)


def test_totals_below_anthropics_minimum_are_refused():
    assert check_total(MIN_TOTAL) == 20_000
    with pytest.raises(ValueError, match="at least 20,000 tokens"):
        check_total(19_999)
    with pytest.raises(ValueError, match="whole number"):
        check_total(True)
    with pytest.raises(ValueError):
        TaskBudget(5_000)


def test_remaining_is_sent_only_after_a_compaction_and_stays_the_same_within_a_context():
    budget = TaskBudget(200_000)
    assert budget.value() == {"type": "tokens", "total": 200_000}
    budget.observe(10_000, 2_000)  # the context's first request: prompt 10k
    budget.observe(15_000, 3_000)  # it grew by the reply and a tool result
    assert budget.value() == {"type": "tokens", "total": 200_000}
    assert budget.spent_in_context() == 8_000
    assert budget.compacted() == 192_000
    assert budget.value() == {"type": "tokens", "total": 200_000, "remaining": 192_000}
    budget.observe(4_000, 1_000)
    budget.observe(9_000, 1_000)
    assert budget.value()["remaining"] == 192_000  # unchanged on every turn: the prompt cache stays valid
    assert budget.compacted() == 186_000
    assert budget.context == 2


def test_compaction_takes_an_explicit_remaining_and_never_goes_below_zero():
    budget = TaskBudget(20_000)
    assert budget.compacted(remaining=12_345) == 12_345
    budget.observe(1_000, 0)
    budget.observe(40_000, 5_000)
    assert budget.compacted() == 0
    assert TaskBudget(20_000).compacted() == 20_000  # nothing observed: nothing spent


def test_the_request_gets_output_config_and_the_beta_on_the_beta_api():
    sent = with_task_budget(
        {"model": "m", "output_config": {"effort": "high"}}, {"type": "tokens", "total": 30_000}, beta_api=True
    )
    assert sent["output_config"] == {"effort": "high", "task_budget": {"type": "tokens", "total": 30_000}}
    assert sent["betas"] == [BETA]
    kept = with_task_budget({"betas": ["other-2025"]}, {"type": "tokens", "total": 30_000}, beta_api=True)
    assert kept["betas"] == ["other-2025", BETA]
    from_client = with_task_budget({}, {"type": "tokens", "total": 30_000}, beta_api=True, default_beta="a, b")
    assert from_client["betas"] == ["a", "b", BETA]  # a per-request beta replaces the client's: keep them


def test_the_plain_api_gets_the_beta_as_a_header_merged_with_the_callers():
    budget = {"type": "tokens", "total": 30_000}
    assert with_task_budget({}, budget, beta_api=False)["extra_headers"] == {"anthropic-beta": BETA}
    theirs = with_task_budget({"extra_headers": {"Anthropic-Beta": "x", "X-Other": "1"}}, budget, beta_api=False)
    assert theirs["extra_headers"] == {"X-Other": "1", "anthropic-beta": f"x,{BETA}"}
    client = with_task_budget({}, budget, beta_api=False, default_beta="foo-1")
    assert client["extra_headers"] == {"anthropic-beta": f"foo-1,{BETA}"}
    header_wins = with_task_budget({"betas": ["b1"], "extra_headers": {"anthropic-beta": "h1"}}, budget, beta_api=True)
    assert header_wins["extra_headers"] == {"anthropic-beta": f"h1,{BETA}"}  # the SDK sends the header, not betas


def test_a_task_budget_the_caller_set_wins_and_the_input_is_not_changed():
    request = {"output_config": {"task_budget": {"type": "tokens", "total": 50_000}}}
    assert with_task_budget(request, {"type": "tokens", "total": 30_000}, beta_api=True) == request
    original = {"output_config": {"effort": "low"}, "extra_headers": {"anthropic-beta": "x"}}
    with_task_budget(original, {"type": "tokens", "total": 30_000}, beta_api=False)
    assert original == {"output_config": {"effort": "low"}, "extra_headers": {"anthropic-beta": "x"}}


def test_a_reply_to_a_request_sent_before_a_compaction_is_not_counted_in_the_new_context():
    budget = TaskBudget(100_000)
    budget.settled(0, 10_000, 2_000)
    budget.compacted()
    budget.settled(0, 50_000, 9_000)  # sent before the compaction, settled after it
    assert budget.spent_in_context() == 0
    budget.settled(1, 3_000, 1_000)
    budget.settled(1, 5_000, 500)
    assert budget.spent_in_context() == 2_500


def test_only_models_that_take_a_task_budget_get_its_value():
    budget = TaskBudget(30_000)
    assert budget.for_model("claude-opus-4-7") == {"type": "tokens", "total": 30_000}
    assert budget.for_model("claude-3-5-haiku-20241022") is None
