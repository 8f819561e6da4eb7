"""Strict mode fails closed: when the metering proxy dies the agent's requests get connection refused (never an
unmetered path) and the run stops with meter_error; an upstream error reaches the agent unchanged and costs
nothing. The supervisor runs in-process here, so the test can make its proxy die."""

from __future__ import annotations

import socket
import sys
import textwrap
import threading

import psutil
import pytest

from capguard.agents.base import Front, LaunchPlan
from capguard.core.caps import Caps
from capguard.core.enums import StopReason
from capguard.core.pricing import Pricer
from capguard.supervisor.strict import StrictMeter
from capguard.supervisor.supervise import Supervisor
from tests.fakes.fake_anthropic import FakeAnthropic, Script, Usage

# An agent that calls the Messages API through $ANTHROPIC_BASE_URL in a loop and logs what each call did.
AGENT = textwrap.dedent(
    """
    import json, os, sys, time, urllib.request, urllib.error
    base, log = os.environ["ANTHROPIC_BASE_URL"], open(sys.argv[1], "a", buffering=1)
    body = json.dumps({"model": "claude-haiku-4-5", "max_tokens": 2000,
                       "messages": [{"role": "user", "content": "hello"}]}).encode()
    while True:
        request = urllib.request.Request(base + "/v1/messages", body, {"content-type": "application/json",
                                         "x-api-key": "sk-ant-fake"})
        try:
            with urllib.request.urlopen(request, timeout=10) as reply:
                log.write(f"ok {reply.status}\\n")
        except urllib.error.HTTPError as err:
            log.write(f"http {err.code} {err.read().decode()[:200]}\\n")
        except urllib.error.URLError as err:
            log.write(f"refused {type(err.reason).__name__}\\n")
        except Exception as err:  # a reply cut when the proxy died
            log.write(f"cut {type(err).__name__}\\n")
        time.sleep(0.02)
    """
)


def run_strict(tmp_path, server: FakeAnthropic, *, kill_proxy_after: int | None = None):
    script = tmp_path / "agent.py"
    script.write_text(AGENT)
    log = tmp_path / "agent.log"
    log.touch()
    strict = StrictMeter(
        [Front("anthropic", server.base_url, "anthropic", ("ANTHROPIC_BASE_URL",))],
        Pricer(),
        Caps(usd_micro=1_000_000, wall_s=8),
    )
    plan = LaunchPlan(argv=[sys.executable, str(script), str(log)], env={"PATH": "/usr/bin:/bin"}, watches=[])
    supervisor = Supervisor(plan, Caps(usd_micro=1_000_000, wall_s=8), Pricer(), name="agent", strict=strict)
    if kill_proxy_after is not None:

        def kill_proxy() -> None:  # the proxy's loop dies under the agent's feet (capguard itself lives)
            server.wait_for(kill_proxy_after, timeout=20)
            strict.proxy.stop()

        threading.Thread(target=kill_proxy, daemon=True).start()
    outcome = supervisor.run()
    return outcome, log.read_text().splitlines(), plan


def test_a_dead_proxy_refuses_the_agent_and_stops_the_run_with_meter_error(tmp_path):
    with FakeAnthropic(Script(usage=Usage(input_tokens=10, output_tokens=20, cache_write_5m=0, cache_read=0))) as srv:
        outcome, lines, plan = run_strict(tmp_path, srv, kill_proxy_after=3)
        port = int(plan.env["ANTHROPIC_BASE_URL"].split(":")[2].split("/")[0])
        served = len(srv.requests)
    assert outcome.stop_reason == StopReason.METER_ERROR
    assert "metering proxy stopped" in (outcome.meter.meter_error or "")
    ok = [line for line in lines if line.startswith("ok")]
    assert len(ok) >= 2 and lines[: len(ok)] == ok
    # after the proxy died: refused (one reply in flight may have been cut), never sent around the proxy
    after = lines[len(ok) :]
    assert all(line.startswith(("refused ConnectionRefusedError", "cut")) for line in after), after
    with pytest.raises(ConnectionRefusedError):  # what any later request of the agent gets
        socket.create_connection(("127.0.0.1", port), timeout=5)
    assert served == len(outcome.proxy_calls)  # every call that reached the server was counted, a cut one too
    assert outcome.meter.cost_micro == sum(round(c["cost_usd"] * 1e6) for c in outcome.proxy_calls)
    assert "127.0.0.1" in plan.env["ANTHROPIC_BASE_URL"]  # the agent had no other way to the provider
    assert not [p for p in psutil.Process().children(recursive=True) if p.is_running() and p.status() != "zombie"]


def test_an_upstream_error_passes_through_unchanged_and_costs_nothing(tmp_path):
    with FakeAnthropic(Script(error_status=529)) as srv:
        outcome, lines, _ = run_strict(tmp_path, srv)
    assert outcome.stop_reason == StopReason.WALL
    assert lines and all(line.startswith("http 529") and "overloaded_error" in line for line in lines)
    assert outcome.meter.cost_micro == 0 and not outcome.proxy_calls
