"""An async client's Budget never blocks the event loop: the month is read from the ledger on the ledger's thread
and awaited, so other tasks keep running while a slow ledger answers.

The real anthropic SDK against an in-process transport (no server); a team config with a monthly cap.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

anthropic = pytest.importorskip("anthropic")
httpx = pytest.importorskip("httpx2")  # the transport the SDK itself uses

from capguard import Budget  # noqa: E402
from capguard.budget.allowance import MonthGuard  # noqa: E402

USER = "dev@example.com"
TICKS = [0]  # bumped by the test's ticker task
SLOW_READ = 0.5  # seconds a month read takes on the ledger


def answer(request):
    if request.url.path.endswith("/count_tokens"):
        return httpx.Response(200, json={"input_tokens": 12})
    sent = json.loads(request.content)
    return httpx.Response(
        200,
        json={
            "id": "msg_async_1",
            "type": "message",
            "role": "assistant",
            "model": sent["model"],
            "content": [{"type": "text", "text": "ok"}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 12, "output_tokens": 3},
        },
    )


@pytest.fixture
def slow_month(tmp_path, monkeypatch):
    """A monthly cap on a ledger whose month read takes SLOW_READ seconds."""
    config = tmp_path / "team.toml"
    config.write_text(
        f'ledger = "{tmp_path / "ledger.db"}"\nuser = "{USER}"\n[team]\ntimezone = "UTC"\n'
        f'[team.users."{USER}"]\nmonthly_usd = 5\n'
    )
    monkeypatch.setenv("CAPGUARD_CONFIG", str(config))
    read = MonthGuard.allowance_and_standings
    ticks_during: list[int] = []  # the event loop's ticks seen while each slow read ran

    def slow(self, run_id):
        before = TICKS[0]
        time.sleep(SLOW_READ)
        ticks_during.append(TICKS[0] - before)
        return read(self, run_id)

    monkeypatch.setattr(MonthGuard, "allowance_and_standings", slow)
    return ticks_during


def test_an_async_call_under_a_monthly_cap_never_blocks_the_event_loop(tmp_path, slow_month):
    budget = Budget(usd=1, cwd=tmp_path)  # the month is read here too, before any loop runs

    async def main() -> tuple[float, str]:
        done = asyncio.Event()

        async def ticker() -> None:
            while not done.is_set():
                await asyncio.sleep(0.01)
                TICKS[0] += 1

        ticking = asyncio.create_task(ticker())
        began = time.monotonic()
        http = httpx.AsyncClient(transport=httpx.MockTransport(answer))
        async with budget:
            client = budget.wrap(anthropic.AsyncAnthropic(api_key="sk-ant-fake", http_client=http, max_retries=0))
            reply = await client.messages.create(
                model="claude-opus-4-7", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
            )
        took = time.monotonic() - began
        await http.aclose()
        done.set()
        await ticking
        return took, reply.content[0].text

    took, text = asyncio.run(main())
    assert text == "ok"
    assert took >= 2 * SLOW_READ  # the month was read before the call and again at its admission
    # the read at admission ran while the loop went on ticking (a blocked loop ticks 0 times during it); the
    # first read, in Budget(), ran before any loop
    assert len(slow_month) >= 2 and slow_month[-1] > 0, f"ticks during each month read: {slow_month}"
    assert budget.steps == 1 and budget.report()["stop_reason"] is None
