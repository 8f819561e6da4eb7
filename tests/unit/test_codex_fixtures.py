"""The recorded Codex rollouts agree with what the fake billed for them: one token_usage_record per billed reply,
nothing for a reply that never completed, and a fork that starts mid-numbering without its parent's records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "codex"
RUNS = ("tool", "sigint-midstream", "sigterm-midstream", "sigint-tool", "cut", "fork-parent")


def records(name: str) -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / f"rollout.{name}.jsonl").read_text().splitlines()]


def billed(name: str) -> list[dict]:
    return [r for r in json.loads((FIXTURES / f"billed.{name}.json").read_text()) if r["billed"]]


def usage_records(name: str) -> list[dict]:
    return [r["payload"] for r in records(name) if r["type"] == "token_usage_record"]


@pytest.mark.parametrize("name", RUNS)
def test_one_usage_record_per_billed_reply_with_its_usage(name):
    recs = usage_records(name)
    bills = billed(name)
    assert [r["response_id"] for r in recs] == [b["id"] for b in bills]
    for rec, bill in zip(recs, bills):
        assert rec["usage"]["total_tokens"] == bill["usage"]["total_tokens"]
        assert rec["usage"]["input_tokens"] == bill["usage"]["input_tokens"]
        assert rec["usage"]["cached_input_tokens"] == bill["usage"]["input_tokens_details"]["cached_tokens"]


@pytest.mark.parametrize("name", ("sigint-midstream", "sigterm-midstream"))
def test_a_reply_cut_short_by_a_signal_leaves_no_usage(name):
    assert usage_records(name) == [] and billed(name) == []


def test_sigint_writes_turn_aborted_and_sigterm_writes_nothing_more():
    aborted = [r["payload"] for r in records("sigint-midstream") if r["payload"].get("type") == "turn_aborted"]
    assert [a["reason"] for a in aborted] == ["interrupted"]
    assert not any(r["payload"].get("type") == "turn_aborted" for r in records("sigterm-midstream"))


def test_fork_child_starts_at_the_parents_ordinal_and_replays_nothing():
    child = records("fork-child")
    meta = child[0]["payload"]
    assert child[0]["type"] == "session_meta" and meta["forked_from_id"]
    assert child[0]["ordinal"] == meta["forked_from_ordinal_exclusive"] > 0
    parent_ids = {r["response_id"] for r in usage_records("fork-parent")}
    child_ids = [r["response_id"] for r in usage_records("fork-child")]
    assert len(child_ids) == 1 and not parent_ids & set(child_ids)


def test_token_count_repeats_the_same_replies():
    counts = [
        r["payload"]["info"]["last_token_usage"]["total_tokens"]
        for r in records("tool")
        if r["payload"].get("type") == "token_count" and r["payload"]["info"]
    ]
    assert counts == [r["usage"]["total_tokens"] for r in usage_records("tool")]
