"""The Budget without an SDK: config, ceilings, holds for calls in flight, warnings, the report, resume.

Calls are driven through the wrapper's own API (admit, settle, fail) with usage written by hand.
"""

from __future__ import annotations

import json
import threading

import pytest

from capguard import Budget, BudgetExceeded
from capguard.core.anthropic_usage import CallUsage
from capguard.core.caps import Caps
from capguard.core.errors import ConfigError, LedgerError
from capguard.core.meter import Meter
from capguard.core.task_budget import BETA
from capguard.reports.run_report import RunFacts, build_report

OPUS = "claude-opus-4-7"  # $5/M input, $10/M 1-hour cache writes, $25/M output


def request(max_tokens=8_000, model=OPUS, **more):
    return {"model": model, "max_tokens": max_tokens, "messages": [{"role": "user", "content": "hi"}], **more}


def call(budget, usage=None, *, prompt=1_000, **more):
    """Admit a request with a counted prompt of `prompt` tokens and settle it with `usage`."""
    usage = usage or CallUsage(input_tokens=1_000, output_tokens=1_000)
    admission = budget.admit(request(**more), prompt_tokens=prompt, beta_api=False)
    budget.settle(admission, usage, message_id=f"msg_{id(admission)}", model=admission.model).result()
    return admission


@pytest.fixture
def make(tmp_path):
    made = []

    def budget(**kwargs):
        kwargs.setdefault("cwd", tmp_path)
        made.append(Budget(**kwargs))
        return made[-1]

    yield budget
    for item in made:
        item.close()


def test_caps_come_from_capguards_config_and_arguments_win(tmp_path, monkeypatch, make):
    (tmp_path / ".capguard.toml").write_text('usd = 3\nwall = "1h"\nwarn_at = "50%"\n')
    monkeypatch.setenv("CAPGUARD_STEPS", "40")
    budget = make()
    assert (budget.caps.usd_micro, budget.caps.wall_s, budget.caps.steps, budget.caps.warn_at) == (
        3_000_000,
        3600.0,
        40,
        0.5,
    )
    explicit = make(usd="$1.50", steps="off", tokens="1.5M", wall=90)
    assert (explicit.caps.usd_micro, explicit.caps.steps, explicit.caps.tokens, explicit.caps.wall_s) == (
        1_500_000,
        None,
        1_500_000,
        90.0,
    )


def test_the_library_section_of_the_config_sets_a_tasks_defaults(tmp_path, make):
    (tmp_path / ".capguard.toml").write_text(
        'usd = 3\nsteps = 40\n[agents.anthropic-sdk]\nusd = 2\ntask_budget = "200k"\n'
        '[agents.claude]\nusd = 9\ntask_budget = "500k"\n'
    )
    budget = make()
    assert (budget.caps.usd_micro, budget.caps.steps, budget.task_budget.total) == (2_000_000, 40, 200_000)
    assert make(task_budget="300k", usd=5).task_budget.total == 300_000  # arguments still win


def test_the_library_section_is_checked_like_the_rest_of_the_config(tmp_path):
    config = tmp_path / ".capguard.toml"
    config.write_text('[agents.anthropic-sdk]\ntask_budget = "10k"\n')
    with pytest.raises(ConfigError, match=r"\[agents.anthropic-sdk\]: task_budget: .*at least 20,000"):
        Budget(cwd=tmp_path)
    config.write_text('[agents.anthropic-sdk]\nmodel = "claude-opus-4-7"\n')
    with pytest.raises(ConfigError, match=r"agents.anthropic-sdk.model: not used by library tasks"):
        Budget(cwd=tmp_path)


def test_bad_arguments_and_small_task_budgets_are_refused_up_front(tmp_path):
    with pytest.raises(ValueError, match=r"Budget\(task_budget=19999\).*at least 20,000"):
        Budget(task_budget=19_999, cwd=tmp_path)
    with pytest.raises(ValueError, match=r"Budget\(usd='-5'\)"):
        Budget(usd="-5", cwd=tmp_path)
    (tmp_path / ".capguard.toml").write_text('usd = "lots"\n')
    with pytest.raises(ConfigError, match="usd"):
        Budget(cwd=tmp_path)


def test_a_call_is_refused_once_the_usd_cap_is_reached(make):
    budget = make(usd=0.05)
    call(budget, CallUsage(input_tokens=1_000, output_tokens=2_000))  # $0.055
    with pytest.raises(BudgetExceeded) as stop:
        budget.check()
    assert stop.value.reason == "usd" and stop.value.exit_code == 122
    assert "cost $0.06 reached the $0.05 cap" in str(stop.value)
    assert stop.value.figures["cost_usd"] == 0.055


def test_max_tokens_is_lowered_so_the_worst_case_fits_the_cap(make):
    budget = make(usd=0.10)
    admission = budget.admit(request(max_tokens=64_000), prompt_tokens=1_000, beta_api=False)
    prompt = admission.prompt_tokens  # 1,000 counted + 5% + 64
    assert prompt == 1_114
    # $0.10 >= 1.1 (US-only inference, unless the request names its region) x (the prompt written to the 1-hour
    # cache at $10/M + the output at $25/M)
    assert admission.kwargs["max_tokens"] == (100_000 * 10 // 11 - prompt * 10) // 25 == 3_190
    assert admission.hold.micro <= 100_000
    eu = make(usd=0.10).admit(request(max_tokens=64_000, inference_geo="eu"), prompt_tokens=1_000, beta_api=False)
    assert eu.kwargs["max_tokens"] == (100_000 - prompt * 10) // 25 == 3_554


def test_a_call_that_cannot_fit_a_minimal_reply_is_refused_without_calling(make):
    budget = make(usd=0.03)
    with pytest.raises(BudgetExceeded, match="a reply of 1,024 tokens") as stop:
        budget.admit(request(), prompt_tokens=2_000, beta_api=False)
    assert stop.value.reason == "usd" and budget.figures()["calls_in_flight"] == 0


def test_calls_in_flight_hold_their_worst_case_against_the_cap(make):
    budget = make(usd=0.30)
    first = budget.admit(request(), prompt_tokens=1_000, beta_api=False)  # worst case ~$0.21
    second = budget.admit(request(), prompt_tokens=1_000, beta_api=False)  # only what is left
    assert first.hold.micro + second.hold.micro <= 300_000
    assert second.kwargs["max_tokens"] < first.kwargs["max_tokens"] == 8_000
    with pytest.raises(BudgetExceeded, match="held by 2 calls in flight"):
        budget.admit(request(), prompt_tokens=1_000, beta_api=False)
    budget.settle(first, CallUsage(input_tokens=1_000, output_tokens=500), message_id="msg_a").result()
    assert budget.admit(request(), prompt_tokens=1_000, beta_api=False).kwargs["max_tokens"] > 1_024


def test_threads_sharing_a_budget_never_cross_the_usd_cap(make):
    budget = make(usd=0.50)
    stops = []

    def agent():
        try:
            while True:
                admission = budget.admit(request(), prompt_tokens=1_000, beta_api=False)
                # the worst case the API allows: the whole prompt written to the 1-hour cache, every token used
                usage = CallUsage(
                    cache_write_tokens=1_114, cache_write_1h_tokens=1_114, output_tokens=admission.kwargs["max_tokens"]
                )
                budget.settle(admission, usage, message_id=f"msg_{threading.get_ident()}_{id(admission)}").result()
        except BudgetExceeded as stop:
            stops.append(stop.reason)

    threads = [threading.Thread(target=agent) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert stops == ["usd"] * 8
    assert budget.cost_usd <= 0.50
    assert budget.cost_usd > 0.50 - 0.04  # used up to less than a minimal reply


def test_steps_in_flight_count_and_a_failed_call_gives_its_step_back(make):
    budget = make(steps=2)
    first = budget.admit(request(), prompt_tokens=None, beta_api=False)
    budget.admit(request(), prompt_tokens=None, beta_api=False)
    with pytest.raises(BudgetExceeded, match="0 replies and 2 calls in flight reached the 2-reply cap"):
        budget.admit(request(), prompt_tokens=None, beta_api=False)
    assert budget.fail(first, charged=False) is None  # an API error: not billed, not a step
    budget.admit(request(), prompt_tokens=None, beta_api=False)
    assert budget.steps == 0 and budget.cost_usd == 0


def test_a_call_lost_in_flight_is_charged_its_worst_case(make):
    budget = make(usd=1)
    admission = budget.admit(request(max_tokens=1_000), prompt_tokens=1_000, beta_api=False)
    budget.fail(admission, charged=True).result()
    assert budget.cost_usd == admission.hold.micro / 1e6 == round((1_114 * 10 + 1_000 * 25) * 1.1) / 1e6
    assert budget.steps == 0  # no reply came back


def test_the_tokens_cap(make):
    budget = make(tokens=3_000)
    call(budget, CallUsage(input_tokens=1_000, cache_read_tokens=1_500, output_tokens=600))
    with pytest.raises(BudgetExceeded, match="3.1k tokens reached the 3.0k-token cap") as stop:
        budget.check()
    assert stop.value.exit_code == 121


def test_the_wall_clock_and_warnings_at_the_soft_threshold(make):
    now = [0.0]
    warnings = []
    budget = make(wall="10s", usd=1, warn_at=0.5, on_warning=warnings.append, clock=lambda: now[0])
    call(budget, CallUsage(input_tokens=10_000, output_tokens=20_000))  # $0.55
    assert [w.cap for w in warnings] == ["usd"]
    assert warnings[0].message == "usd at 55% of its cap ($0.55 of $1.00)"
    now[0] = 6.0
    budget.check()
    assert [w.cap for w in warnings] == ["usd", "wall"]  # each cap warns once
    call(budget, CallUsage(input_tokens=10, output_tokens=10))
    now[0] = 10.0
    with pytest.raises(BudgetExceeded, match="wall-clock 10.0s reached the 10.0s cap") as stop:
        budget.check()
    assert stop.value.exit_code == 124 and len(warnings) == 2


def test_a_model_nobody_can_prices_is_refused_under_a_usd_cap(make):
    with pytest.raises(BudgetExceeded, match="no known price") as stop:
        make(usd=1).check("no-such-model")
    assert stop.value.reason == "unpriced"
    call(make(usd=1, unpriced="tokens-only"), model="no-such-model")


def test_a_lowered_max_tokens_brings_an_extended_thinking_budget_down(make):
    budget = make(usd=0.10)
    thinking = {"type": "enabled", "budget_tokens": 6_000}
    admission = budget.admit(request(max_tokens=16_000, thinking=thinking), prompt_tokens=1_000, beta_api=False)
    assert admission.kwargs["thinking"] == {"type": "enabled", "budget_tokens": admission.kwargs["max_tokens"] - 1}
    with pytest.raises(BudgetExceeded):
        make(usd=0.035).admit(request(max_tokens=16_000, thinking=thinking), prompt_tokens=1_000, beta_api=False)


def test_task_budget_fields_only_for_models_that_take_them(make):
    budget = make(task_budget="200k")
    sent = budget.admit(request(), prompt_tokens=None, beta_api=False).kwargs
    assert sent["output_config"] == {"task_budget": {"type": "tokens", "total": 200_000}}
    assert sent["extra_headers"] == {"anthropic-beta": BETA}
    untouched = budget.admit(request(model="claude-sonnet-4-5"), prompt_tokens=None, beta_api=False).kwargs
    assert "output_config" not in untouched and "extra_headers" not in untouched


def test_the_report_has_the_clis_fields(make):
    budget = make(usd=1, task_budget=50_000)
    call(budget)
    report = budget.close()
    cli = build_report(RunFacts("r", "aider", [], "/", "u", "h", 0.0, 1.0, 1.0, Caps(), Meter(), None, 0))
    assert set(report) == set(cli)
    assert report["agent"] == "anthropic-sdk" and report["run_id"] == budget.task_id
    assert (report["steps"], report["cost_usd"], report["exit_code"]) == (1, 0.03, 0)
    assert report["caps"]["usd"] == 1 and report["caps"]["task_budget"] == 50_000
    assert budget.report() is report
    with pytest.raises(RuntimeError, match="closed"):
        budget.check()


def test_resume_restores_caps_spend_and_the_task_budget_countdown(make, tmp_path):
    ledger = tmp_path / "ledger.db"
    first = make(usd=1, steps=10, task_budget=100_000, task_id="task-1", ledger=ledger)
    call(first, CallUsage(input_tokens=5_000, output_tokens=1_000))
    call(first, CallUsage(input_tokens=9_000, output_tokens=1_000))
    assert first.compacted() == 95_000
    call(first, CallUsage(input_tokens=2_000, output_tokens=500))
    first.close()

    again = make(task_id="task-1", ledger=ledger, _resume=True)
    assert (again.caps.usd_micro, again.caps.steps, again.task_budget.total) == (1_000_000, 10, 100_000)
    assert (again.cost_usd, again.tokens, again.steps) == (first.cost_usd, first.tokens, 3)
    assert again.task_budget.value() == {"type": "tokens", "total": 100_000, "remaining": 95_000}
    assert again.task_budget.context == 1
    with Budget.resume("task-1", ledger=ledger, cwd=tmp_path, usd=5) as overridden:
        assert overridden.caps.usd_micro == 5_000_000


def test_task_ids_are_claimed_once_and_resumed_only_if_known(make, tmp_path):
    make(task_id="task-2", ledger=tmp_path / "l.db").close()
    with pytest.raises(LedgerError, match=r"already in ledger .*Budget.resume\('task-2'\)"):
        Budget(task_id="task-2", ledger=tmp_path / "l.db", cwd=tmp_path)
    with pytest.raises(LedgerError, match="task-3 is not in ledger"):
        Budget.resume("task-3", ledger=tmp_path / "l.db", cwd=tmp_path)


def test_every_call_is_a_ledger_row_and_the_report_lands_in_the_data_dir(make, tmp_path):
    from capguard import paths
    from capguard.ledger import open_ledger

    budget = make(usd=1, ledger=tmp_path / "rows.db")
    admission = call(
        budget, CallUsage(input_tokens=100, output_tokens=10, cache_write_tokens=50, cache_write_1h_tokens=50)
    )
    budget.close()
    with open_ledger(tmp_path / "rows.db") as ledger:
        run, rows = ledger.run(budget.task_id), ledger.usage(budget.task_id)
    assert run["agent"] == "anthropic-sdk" and run["status"] == "exited" and run["steps"] == 1
    (row,) = rows
    assert row["dedupe_key"] == f"sdk:{budget.task_id}:msg_{id(admission)}"
    assert (row["input_tokens"], row["cache_write_tokens"], row["priced_by"]) == (100, 50, "genai-prices")
    assert row["details"]["cache_write_1h_tokens"] == 50 and row["details"]["max_tokens"] == 8_000
    report = json.loads((paths.runs_dir() / budget.task_id / "report.json").read_text())
    assert report["run_id"] == budget.task_id
