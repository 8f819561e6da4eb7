"""A request that does not fit the cap while another call holds part of it waits for that call to settle, then goes
(or is refused) on what is really left: Codex's TUI sends a title request beside a turn with no output limit, which
the proxy holds for all the cap leaves. A request whose client gave up meanwhile is never sent."""

from __future__ import annotations

import threading

import httpx

from capguard.core.pricing import Pricer
from capguard.metering.proxy import Gate, MeteringProxy, Refused
from tests.fakes import fake_responses

BODY = {"model": "gpt-5", "input": "hello " * 50, "stream": True}


def proxied(events: list):
    fake = fake_responses.FakeResponses(fake_responses.Script([fake_responses.say("x" * 400, delay_s=1.5)]))
    return fake, Gate(Pricer(), cap_micro=300_000, on_event=events.append)


def test_the_second_request_waits_for_the_first_then_goes():
    events: list = []
    fake, gate = proxied(events)
    with fake, MeteringProxy(gate, {"up": fake.base_url}, dialects={"up": "responses"}) as proxy:
        url = proxy.base_url("up") + "/responses"
        first = threading.Thread(target=lambda: httpx.post(url, json=BODY, timeout=60))
        first.start()
        fake.wait_for(1, timeout=30)
        assert gate.held_micro > 250_000  # the first holds (nearly) all the cap leaves: no limit of its own
        second = httpx.post(url, json=BODY, timeout=60)  # waits for the first to settle
        first.join(60)
        assert second.status_code == 200 and fake.wait_idle(10)
        assert [r["status"] for r in fake.requests] == ["completed", "completed"]
    assert not [e for e in events if isinstance(e, Refused)]  # never refused: the first left room
    assert len(events) == 2 and gate.spent_micro <= 300_000


def test_a_request_whose_client_gave_up_while_waiting_is_never_sent():
    events: list = []
    fake, gate = proxied(events)
    with fake, MeteringProxy(gate, {"up": fake.base_url}, dialects={"up": "responses"}) as proxy:
        url = proxy.base_url("up") + "/responses"
        first = threading.Thread(target=lambda: httpx.post(url, json=BODY, timeout=60))
        first.start()
        fake.wait_for(1, timeout=30)
        try:
            httpx.post(url, json=BODY, timeout=0.3)
        except httpx.TimeoutException:
            pass
        first.join(60)
        # the waiting handler woke when the first settled, before this one came: it sent nothing
        assert httpx.post(url, json=BODY, timeout=60).status_code == 200
        assert fake.wait_idle(10)
        assert len(fake.requests) == 2  # the first and this one
    assert len(events) == 2
