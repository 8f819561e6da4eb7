"""What capguard says at start and at a normal exit: values in, lines out."""

from __future__ import annotations

from capguard.agents.aider.adapter import streams
from capguard.core.caps import Caps
from capguard.core.events import Reply
from capguard.core.meter import Meter
from capguard.core.pricing import Priced
from capguard.reports.run_report import RunFacts, exit_line
from capguard.reports.start_notes import NO_CAP, start_notes, unpriced_refusal

EST = "aider streams by default and then logs its own estimates; add --no-stream for the server's figures"


def test_no_cap_at_all_says_metering_only_and_nothing_else():
    assert start_notes(Caps(), model="x/unknown", priced=False, estimates=EST) == [NO_CAP]


def test_a_monthly_cap_alone_is_a_cap():
    assert start_notes(Caps(monthly_remaining_micro=5_000_000), model=None, priced=True, estimates=None) == []


def test_estimates_are_mentioned_only_under_a_usd_or_token_cap():
    assert start_notes(Caps(wall_s=60), model=None, priced=True, estimates=EST) == []
    assert start_notes(Caps(tokens=1000), model=None, priced=True, estimates=EST) == [f"capguard: note: {EST}"]


def test_unpriced_named_model_follows_the_policy():
    stop, warn, tokens = (Caps(usd_micro=1, unpriced=p) for p in ("stop", "warn", "tokens-only"))
    assert 'add [prices."x/m"]' in (unpriced_refusal(stop, "x/m", False) or "")
    assert unpriced_refusal(stop, "x/m", True) is None and unpriced_refusal(warn, "x/m", False) is None
    assert unpriced_refusal(Caps(tokens=5), "x/m", False) is None  # no USD cap: nothing to enforce
    assert start_notes(warn, model="x/m", priced=False, estimates=None)[0].startswith("capguard: warning: x/m")
    assert start_notes(tokens, model="x/m", priced=False, estimates=None) == []


def test_aider_streams_unless_told_not_to(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    home = {"HOME": str(tmp_path / "home")}
    assert streams([], home) and streams(["--no-stream", "--stream"], home)
    assert not streams(["--no-stream"], home) and not streams([], {**home, "AIDER_STREAM": "off"})
    (tmp_path / ".aider.conf.yml").write_text("stream: false\n")
    assert not streams([], home) and streams([], {**home, "AIDER_STREAM": "true"})
    assert streams(["--", "--no-stream"], {**home, "AIDER_STREAM": "1"})  # after -- it is a file name


def test_exit_line_reads_like_the_stop_line():
    meter = Meter()
    meter.add_reply(Reply(key="r0", model="m", output_tokens=950), Priced("m", 440_000, "config"))
    facts = RunFacts("01abc", "aider", [], "/", "u", "h", 0.0, 8.4, 8.4, Caps(), meter, None, 0)
    assert exit_line(facts) == "capguard: aider exited (status 0): 1 reply, 950 tokens, $0.44, 8.4s; run 01abc"
    facts.agent_returncode = -11
    assert exit_line(facts).startswith("capguard: aider exited (killed by SIGSEGV): ")


def test_an_agent_that_prices_its_own_replies_is_noted_not_refused():
    stop = Caps(usd_micro=1_000_000)
    assert unpriced_refusal(stop, "x/m", False, reports_cost=True) is None
    lines = start_notes(stop, model="x/m", priced=False, estimates=None, reports_cost=True)
    assert len(lines) == 1 and lines[0].startswith("capguard: note: x/m has no price in genai-prices")
