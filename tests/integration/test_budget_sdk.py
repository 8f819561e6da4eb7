"""capguard's Budget around the real `anthropic` SDK, pointed at the fake Anthropic server on 127.0.0.1: what is
counted, what is refused, and what goes out on the wire.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

anthropic = pytest.importorskip("anthropic")

from capguard import Budget, BudgetExceeded  # noqa: E402
from capguard.core.task_budget import BETA  # noqa: E402
from capguard.ledger import open_ledger  # noqa: E402
from tests.fakes.fake_anthropic import FakeAnthropic, Script, Usage, estimate_tokens  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
OPUS = "claude-opus-4-7"  # $5/M input, $25/M output, task budgets
SONNET = "claude-sonnet-5"  # $2/M input, $10/M output, no task budgets (they start at Sonnet 5.5)
USAGE = Usage(input_tokens=1_000, output_tokens=2_000, cache_write_5m=0, cache_read=0)  # Opus: $0.055
PROMPT = [{"role": "user", "content": "LOOP " + "padding " * 300}]  # count_tokens: ~640 tokens


@pytest.fixture
def server():
    with FakeAnthropic(Script(usage=USAGE, honor_max_tokens=True)) as srv:
        yield srv


@pytest.fixture
def budgets(tmp_path):
    made = []

    def make(**kwargs):
        kwargs.setdefault("cwd", tmp_path)
        made.append(Budget(**kwargs))
        return made[-1]

    yield make
    for budget in made:
        budget.close()


def sdk(server, *, async_=False, **options):
    kind = anthropic.AsyncAnthropic if async_ else anthropic.Anthropic
    return kind(base_url=server.base_url, api_key="sk-ant-fake", max_retries=0, **options)


def main_requests(server):
    return [r for r in server.requests if r["kind"] == "main"]


def loop(client, *, model=OPUS, max_tokens=4_000, stream=False):
    """A runaway agent loop: the fake asks for a tool call on every reply. Returns the refusal."""
    messages = list(PROMPT)
    with pytest.raises(BudgetExceeded) as stop:
        for _ in range(200):
            if stream:
                with client.messages.stream(model=model, max_tokens=max_tokens, messages=messages) as events:
                    reply = events.get_final_message()
            else:
                reply = client.messages.create(model=model, max_tokens=max_tokens, messages=messages)
            results = [
                {"type": "tool_result", "tool_use_id": b.id, "content": "ok"}
                for b in reply.content
                if b.type == "tool_use"
            ]
            messages += [{"role": "assistant", "content": reply.content}, {"role": "user", "content": results}]
    return stop.value


def ledger_rows(budget):
    with open_ledger(budget._store.path_or_url) as ledger:
        return ledger.usage(budget.task_id)


# ---- counting


def test_a_plain_call_is_counted_priced_and_recorded(server, budgets):
    budget = budgets(usd=5)
    reply = budget.wrap(sdk(server)).messages.create(model=OPUS, max_tokens=4_000, messages=PROMPT)
    assert reply.usage.output_tokens == 2_000
    assert (budget.steps, budget.tokens, budget.cost_usd) == (1, 3_000, 0.055)
    (row,) = ledger_rows(budget)
    assert row["dedupe_key"] == f"sdk:{budget.task_id}:{reply.id}" and row["cost_micro_usd"] == 55_000


def test_streamed_calls_are_counted_from_message_start_and_message_delta(server, budgets):
    usage = Usage(input_tokens=500, output_tokens=1_000, cache_write_5m=2_000, cache_write_1h=1_000, cache_read=4_000)
    server.script.usage = usage
    budget = budgets(usd=5)
    client = budget.wrap(sdk(server))
    for _ in client.messages.create(model=OPUS, max_tokens=4_000, messages=PROMPT, stream=True):
        pass
    with client.messages.stream(model=OPUS, max_tokens=4_000, messages=PROMPT) as stream:
        assert stream.get_final_text()
    with client.beta.messages.stream(model=OPUS, max_tokens=4_000, messages=PROMPT) as stream:
        stream.until_done()
    # per call: 500 x $5 + 2,000 x $6.25 (5-minute writes) + 1,000 x $10 (1-hour) + 4,000 x $0.50 + 1,000 x $25, /M
    assert budget.steps == 3 and budget.tokens == 3 * 8_500
    assert budget.cost_usd == pytest.approx(3 * 0.052)
    rows = ledger_rows(budget)
    assert [r["details"]["stream"] for r in rows] == [True] * 3
    assert [r["cache_write_tokens"] for r in rows] == [3_000] * 3


def test_async_calls_streamed_and_not(server, budgets):
    budget = budgets(usd=5)

    async def agent():
        client = budget.wrap(sdk(server, async_=True))
        await client.messages.create(model=OPUS, max_tokens=4_000, messages=PROMPT)
        stream = await client.messages.create(model=OPUS, max_tokens=4_000, messages=PROMPT, stream=True)
        async for _ in stream:
            pass
        async with client.beta.messages.stream(model=OPUS, max_tokens=4_000, messages=PROMPT) as events:
            await events.get_final_message()
        await client.close()

    asyncio.run(agent())
    assert (budget.steps, budget.cost_usd) == (3, 0.165)
    assert len(ledger_rows(budget)) == 3


def test_a_stream_closed_early_is_charged_its_whole_max_tokens(server, budgets):
    budget = budgets(usd=5)
    stream = budget.wrap(sdk(server)).messages.create(model=OPUS, max_tokens=3_000, messages=PROMPT, stream=True)
    next(iter(stream))  # message_start: the prompt is known, the reply is not
    stream.close()
    assert budget.cost_usd == (1_000 * 5 + 3_000 * 25) / 1e6
    (row,) = ledger_rows(budget)
    assert row["details"]["estimated"] == "reply cut short: output charged at max_tokens"


def test_an_api_error_is_not_charged_and_gives_its_hold_back(server, budgets):
    budget = budgets(usd=5, steps=1)
    client = budget.wrap(sdk(server))
    with pytest.raises(anthropic.InternalServerError):
        client.messages.create(model=OPUS, max_tokens=4_000, messages=[{"role": "user", "content": "ERROR:500"}])
    assert budget.figures() == {**budget.figures(), "cost_usd": 0, "held_usd": 0, "calls_in_flight": 0, "steps": 0}
    client.messages.create(model=OPUS, max_tokens=4_000, messages=PROMPT)  # the step was given back


def test_a_client_with_other_options_stays_budgeted(server, budgets):
    budget = budgets(steps=1)
    client = budget.wrap(sdk(server)).with_options(timeout=30)
    client.messages.create(model=OPUS, max_tokens=4_000, messages=PROMPT)
    with pytest.raises(BudgetExceeded):
        client.messages.create(model=OPUS, max_tokens=4_000, messages=PROMPT)
    assert budget.wrap(client).unwrapped is client.unwrapped  # wrapping twice does not count twice


def test_the_fake_cuts_replies_at_max_tokens_as_the_api_does(server):
    reply = sdk(server).messages.create(model=OPUS, max_tokens=700, messages=PROMPT)
    assert (reply.usage.output_tokens, reply.stop_reason) == (700, "max_tokens")
    server.script.honor_max_tokens = False
    assert sdk(server).messages.create(model=OPUS, max_tokens=700, messages=PROMPT).usage.output_tokens == 2_000


def test_unmetered_entry_points_are_refused(server, budgets):
    client = budgets().wrap(sdk(server))
    for name in ("batches", "with_raw_response", "with_streaming_response"):
        with pytest.raises(TypeError, match=f"does not meter messages.{name}"):
            getattr(client.messages, name)
    with pytest.raises(TypeError, match="tool_runner"):
        client.beta.messages.tool_runner  # noqa: B018
    for name in ("with_raw_response", "with_streaming_response"):
        with pytest.raises(TypeError, match=f"does not meter client.{name}"):
            getattr(client, name)
    assert client.messages.count_tokens(model=OPUS, messages=PROMPT).input_tokens > 0  # free: passed through
    assert client.models.list().data  # the rest of the client is its own


# ---- each ceiling stops a loop before the call


@pytest.mark.parametrize("stream", [False, True])
def test_usd_cap_stops_the_loop_without_ever_crossing_it(server, budgets, stream):
    budget = budgets(usd=0.30)
    stop = loop(budget.wrap(sdk(server)), stream=stream)
    assert stop.reason == "usd" and stop.exit_code == 122
    assert budget.cost_usd <= 0.30
    assert len(main_requests(server)) == budget.steps  # the refused call never reached the API


def test_tokens_cap_stops_the_loop(server, budgets):
    budget = budgets(tokens=10_000)
    stop = loop(budget.wrap(sdk(server)))
    assert (stop.reason, budget.steps, len(main_requests(server))) == ("tokens", 4, 4)
    assert "12k tokens reached the 10k-token cap" in str(stop)


def test_steps_cap_stops_the_loop(server, budgets):
    budget = budgets(steps=3)
    stop = loop(budget.wrap(sdk(server)), stream=True)
    assert (stop.reason, stop.exit_code, len(main_requests(server))) == ("steps", 120, 3)


def test_wall_clock_cap_stops_the_loop(server, budgets):
    server.script.delay_s = 0.2
    budget = budgets(wall="0.5s")
    stop = loop(budget.wrap(sdk(server)))
    assert stop.reason == "wall" and stop.exit_code == 124
    assert len(main_requests(server)) == budget.steps >= 2  # replies of ~0.2 s until 0.5 s had passed
    assert stop.figures["elapsed_s"] >= 0.5


# ---- on the wire


def test_max_tokens_is_lowered_on_the_wire_so_the_worst_case_fits(server, budgets):
    budget = budgets(usd=0.12)
    client = budget.wrap(sdk(server))
    client.messages.create(model=OPUS, max_tokens=64_000, messages=PROMPT)
    client.messages.create(model=OPUS, max_tokens=64_000, messages=PROMPT)
    count, first, _, second = server.requests
    assert count["kind"] == "count_tokens" and count["body"]["messages"] == PROMPT
    prompt = math.ceil(estimate_tokens(count["body"]) * 1.05) + 64  # the count, and a margin

    def worst(max_tokens: int) -> float:  # micro-USD: the prompt as 1-hour cache writes, US-only inference
        return (prompt * 10 + max_tokens * 25) * 1.1

    assert worst(first["body"]["max_tokens"]) <= 120_000 < worst(first["body"]["max_tokens"] + 1)
    assert worst(second["body"]["max_tokens"]) <= 120_000 - 55_000 < worst(second["body"]["max_tokens"] + 1)
    assert budget.cost_usd == 0.11


def test_without_count_tokens_the_prompt_is_estimated_from_its_bytes(server, budgets):
    budget = budgets(usd=0.12, count_tokens=False)
    budget.wrap(sdk(server)).messages.create(model=OPUS, max_tokens=64_000, messages=PROMPT)
    (sent,) = server.requests  # no count_tokens request
    bytes_ = len(json.dumps({"messages": PROMPT}).encode())
    assert (bytes_ * 10 + sent["body"]["max_tokens"] * 25) * 1.1 < 120_000  # at least a token per byte held


def test_task_budget_fields_and_beta_header_as_sent(server, budgets):
    budget = budgets(task_budget=200_000)
    client = budget.wrap(sdk(server, default_headers={"anthropic-beta": "other-2026-01-01"}))
    client.messages.create(model=OPUS, max_tokens=4_000, messages=PROMPT)
    client.beta.messages.create(model=OPUS, max_tokens=4_000, messages=PROMPT, betas=["files-api-2025-04-14"])
    with client.messages.stream(model=OPUS, max_tokens=4_000, messages=PROMPT) as stream:
        stream.until_done()
    client.messages.create(model=SONNET, max_tokens=4_000, messages=PROMPT)
    plain, beta, streamed, sonnet = main_requests(server)
    for sent in (plain, beta, streamed):
        assert sent["body"]["output_config"] == {"task_budget": {"type": "tokens", "total": 200_000}}
    assert plain["anthropic_beta"] == streamed["anthropic_beta"] == f"other-2026-01-01,{BETA}"
    assert beta["anthropic_beta"] == f"files-api-2025-04-14,{BETA}"
    assert "output_config" not in sonnet["body"] and sonnet["anthropic_beta"] == "other-2026-01-01"


def test_remaining_is_sent_only_after_a_compaction_and_then_on_every_turn(server, budgets):
    server.script.usage = [
        Usage(input_tokens=n, output_tokens=1_000, cache_write_5m=0, cache_read=0)
        for n in (10_000, 14_000, 18_000, 3_000, 7_000)
    ]
    budget = budgets(task_budget=100_000)
    client = budget.wrap(sdk(server))
    for _ in range(3):
        client.messages.create(model=OPUS, max_tokens=4_000, messages=PROMPT)
    assert budget.compacted() == 100_000 - (18_000 + 1_000 - 10_000)  # the context grew by 9k
    for _ in range(2):
        client.messages.create(model=OPUS, max_tokens=4_000, messages=PROMPT)
    sent = [r["body"]["output_config"]["task_budget"] for r in main_requests(server)]
    assert sent[:3] == [{"type": "tokens", "total": 100_000}] * 3
    assert sent[3:] == [{"type": "tokens", "total": 100_000, "remaining": 91_000}] * 2
    assert budget.compacted() == 91_000 - (7_000 + 1_000 - 3_000)


# ---- many threads, one budget


def test_threads_hammering_one_budget_never_cross_the_usd_cap(server, budgets):
    server.script.usage = Usage(input_tokens=600, output_tokens=3_000, cache_write_5m=0, cache_read=0)
    server.script.delay_s = 0.05
    budget = budgets(usd=0.40)
    client = budget.wrap(sdk(server))
    stops: list[str] = []

    def agent():
        try:
            while True:
                client.messages.create(model=OPUS, max_tokens=4_000, messages=PROMPT)
        except BudgetExceeded as stop:
            stops.append(stop.reason)

    threads = [threading.Thread(target=agent) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert stops == ["usd"] * 6
    rows = ledger_rows(budget)
    assert sum(r["cost_micro_usd"] for r in rows) == round(budget.cost_usd * 1e6) <= 400_000
    assert len(rows) == len(main_requests(server)) == budget.steps
    sent = [r["body"]["max_tokens"] for r in main_requests(server)]
    assert min(sent) < 4_000  # some calls were lowered to fit what the others held
    spans = sorted((r["time"], r["t_end"]) for r in main_requests(server))
    overlapped = [later[0] < earlier[1] for earlier, later in zip(spans, spans[1:], strict=False)]
    assert any(overlapped)  # the calls really were in flight together


# ---- a crashed harness resumes


def test_resume_after_the_harness_is_killed_mid_loop(server, tmp_path):
    server.script.delay_s = 0.2
    ledger, script = tmp_path / "ledger.db", ROOT / "tests" / "fakes" / "budget_loop.py"
    child = subprocess.Popen(
        [sys.executable, str(script), server.base_url, str(ledger), "task-crash"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines = [child.stdout.readline() for _ in range(3)]
    assert [line.split()[:2] for line in lines] == [["step", "1"], ["step", "2"], ["step", "3"]]
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    child.stdout.close()
    assert server.wait_idle(5)

    budget = Budget.resume("task-crash", ledger=ledger, cwd=tmp_path)
    try:
        assert budget.caps.usd_micro == 1_000_000
        recorded = len(ledger_rows(budget))
        assert budget.steps == recorded and recorded in (3, 4)  # the call in flight at the kill may be lost
        assert budget.cost_usd == pytest.approx(recorded * 0.055)
        assert len(main_requests(server)) - recorded in (0, 1)
    finally:
        budget.close()
    server.script.delay_s = 0
    finished = subprocess.run(
        [sys.executable, str(script), server.base_url, str(ledger), "task-crash", "--resume"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert finished.stdout.splitlines()[-1] == "stopped usd"
    with open_ledger(ledger) as book:
        rows, run = book.usage("task-crash"), book.run("task-crash")
    assert sum(r["cost_micro_usd"] for r in rows) <= 1_000_000 and run["stop_reason"] == "usd"
    assert re.fullmatch(r"step \d+ [\d.]+", finished.stdout.splitlines()[0])
    assert int(finished.stdout.splitlines()[0].split()[1]) == recorded + 1  # counting went on from the ledger


# ---- the README's example runs as written


def test_the_readme_library_example_runs_verbatim(tmp_path):
    section = (ROOT / "README.md").read_text().split("\n## Library", 1)[1].split("\n## ", 1)[0]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    # as the README says: from the checkout, where the fake server (tests/fakes/, not shipped) is importable
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "refused (usd, exit code 122): a reply of 1,024 tokens" in done.stdout
    for line in done.stdout.splitlines():  # the output the README shows is the output you get
        assert re.sub(r"task 01\w{24}", "task 01m8...", line) in section, line
