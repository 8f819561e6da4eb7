"""Strict mode's proxy for Bedrock's Converse API (litellm's way to Bedrock, for aider), pure parts: the routes, a
request's facts and refusals, its output limit lowered, the usage of a whole reply and of AWS's event stream however
it is cut, and aider's Bedrock front (an API key, AWS credentials the proxy signs with, or a refusal)."""

from __future__ import annotations

import json
import random

import pytest

from capguard.agents.aider.adapter import strict_fronts as aider_fronts
from capguard.core.errors import ConfigError
from capguard.core.pricing import BEDROCK_REGIONAL, Pricer
from capguard.metering.proxy.dialects import BEDROCK, CONVERSE, ask, error_body, route, with_max_out
from capguard.metering.proxy.eventstream import MessageSplitter, converse_event, is_exception
from capguard.metering.proxy.gate import Admission, Gate, Refused
from capguard.metering.proxy.usage import Tracker, from_body
from tests.fakes import eventstream as aws

MODEL = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
BODY = {
    "system": [{"text": "You are a coder."}],
    "messages": [{"role": "user", "content": [{"text": "hi"}]}],
    "inferenceConfig": {"temperature": 0, "maxTokens": 2000},
    "additionalModelRequestFields": {},
}


@pytest.mark.parametrize(
    ("tail", "stream", "location"),
    [
        (f"model/{MODEL}/converse", False, "regional"),
        ("model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse-stream", True, "regional"),
        ("model/global.anthropic.claude-sonnet-4-5-20250929-v1:0/converse-stream", True, "global"),
    ],
)
def test_converse_paths_name_the_model_and_the_stream(tail, stream, location):
    found = route("POST", tail, BEDROCK)
    assert (found.dialect, found.platform, found.why) == (CONVERSE, BEDROCK, None)
    assert (found.model, found.stream, found.location) == ("claude-sonnet-4-5-20250929", stream, location)
    refused = route("POST", "model/amazon.nova-pro-v1:0/converse", BEDROCK)
    assert refused.dialect is None and "Anthropic's models on Bedrock" in (refused.why or "")


def test_a_requests_facts():
    facts = ask(CONVERSE, BODY, model="claude-sonnet-4-5-20250929", stream=True, location="regional")
    assert (facts.max_out, facts.stream, facts.cache_write, facts.hidden_reasoning) == (2000, True, None, False)
    assert facts.geo == BEDROCK_REGIONAL and facts.platform == BEDROCK
    assert ask(CONVERSE, BODY, model="claude-sonnet-4-5-20250929", location="global").geo is None
    cached = {**BODY, "system": [{"text": "You are a coder."}, {"cachePoint": {"type": "default"}}]}
    assert ask(CONVERSE, cached, model="claude-sonnet-4-5-20250929").cache_write == "5m"
    thinking = {**BODY, "additionalModelRequestFields": {"thinking": {"type": "enabled", "budget_tokens": 1500}}}
    assert ask(CONVERSE, thinking, model="claude-sonnet-4-5-20250929").hidden_reasoning
    assert ask(CONVERSE, {**BODY, "inferenceConfig": {}}, model="claude-sonnet-4-5-20250929").max_out is None


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        ({"guardrailConfig": {"guardrailIdentifier": "g", "guardrailVersion": "1"}}, "Guardrail"),
        ({"performanceConfig": {"latency": "optimized"}}, "latency-optimized"),
        ({"serviceTier": {"type": "priority"}}, "service tier"),
        ({"promptVariables": {"x": {"text": "y"}}}, "prompt management"),
        ({"messages": [{"role": "user", "content": [{"image": {"format": "png",
          "source": {"s3Location": {"uri": "s3://b/k"}}}}]}]}, "S3 location"),
        ({"toolConfig": {"tools": [{"systemTool": {"name": "nova_grounding"}}]}}, "server-side tool"),
        ({"system": [{"text": "x"}, {"cachePoint": {"type": "default", "ttl": "1h"}}]}, "1-hour cache"),
    ],
)  # fmt: skip
def test_what_capguard_cannot_bound_is_refused(extra, why):
    with pytest.raises(ValueError, match=why):
        ask(CONVERSE, {**BODY, **extra}, model="claude-sonnet-4-5-20250929")
    assert ask(CONVERSE, {**BODY, "serviceTier": {"type": "default"}}, model="claude-sonnet-4-5-20250929")


def test_the_output_limit_is_lowered_in_inference_config_and_a_thinking_budget_under_it():
    lowered = with_max_out(CONVERSE, BODY, 1500)
    assert (
        lowered["inferenceConfig"] == {"temperature": 0, "maxTokens": 1500}
        and BODY["inferenceConfig"]["maxTokens"] == 2000
    )
    thinking = {**BODY, "additionalModelRequestFields": {"thinking": {"type": "enabled", "budget_tokens": 4000}}}
    assert with_max_out(CONVERSE, thinking, 3000)["additionalModelRequestFields"]["thinking"]["budget_tokens"] == 2999
    assert with_max_out(CONVERSE, thinking, 1024)["additionalModelRequestFields"]["thinking"] == {"type": "disabled"}
    assert json.loads(error_body(CONVERSE, "no")) == {"message": "no"}  # Bedrock's own error shape


USAGE = {"inputTokens": 1200, "outputTokens": 321, "totalTokens": 1621, "cacheReadInputTokens": 100,
         "cacheWriteInputTokens": 50}  # fmt: skip


def test_a_whole_replys_usage():
    seen = from_body(CONVERSE, {"output": {"message": {"content": [{"text": "x"}]}}, "usage": USAGE})
    assert seen.complete and seen.usage is not None
    usage = seen.usage
    assert (usage.input_tokens, usage.output_tokens, usage.cache_read_tokens, usage.cache_write_tokens) == (
        1200, 321, 100, 50,
    )  # fmt: skip
    # a usage that leaves out a figure the API always states is charged by the bound, never read as 0
    partial = from_body(CONVERSE, {"usage": {"inputTokens": 1200}})
    assert not partial.complete and partial.suspicious and "outputTokens" in partial.suspicious
    garbage = from_body(CONVERSE, {"usage": {"inputTokens": "lots", "outputTokens": 1}})
    assert not garbage.complete and garbage.unreadable


EVENTS = [
    ("messageStart", {"role": "assistant"}),
    ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "héllo " * 40}}),
    ("contentBlockStart", {"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "t", "name": "edit"}}}),
    ("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": '{"a":1}'}}}),
    ("contentBlockStop", {"contentBlockIndex": 1}),
    ("messageStop", {"stopReason": "tool_use"}),
    ("metadata", {"usage": USAGE, "metrics": {"latencyMs": 10}}),
]


def _stream(events) -> bytes:
    headers = {":message-type": "event", ":content-type": "application/json"}
    return b"".join(
        aws.message({**headers, ":event-type": k}, json.dumps({**p, "p": "abc"}).encode()) for k, p in events
    )


@pytest.mark.parametrize("seed", range(10))
def test_a_streams_usage_is_read_however_its_bytes_are_cut(seed):
    data, rng, at = _stream(EVENTS), random.Random(seed), 0
    splitter, tracker = MessageSplitter(), Tracker(CONVERSE)
    while at < len(data):
        size = rng.choice([1, 3, 9, 64, 700])
        for message in splitter.feed(data[at : at + size]):
            if (event := converse_event(message)) is not None:
                tracker.see(event)
        at += size
    seen = tracker.seen
    assert seen.complete and seen.usage is not None and seen.usage.output_tokens == 321
    assert seen.output_bytes == len(("héllo " * 40).encode()) + len("edit") + len('{"a":1}')


def test_a_stream_cut_before_its_metadata_has_no_usage_and_an_exception_is_no_event():
    splitter, tracker = MessageSplitter(), Tracker(CONVERSE)
    for message in splitter.feed(_stream(EVENTS[:-1])):
        if (event := converse_event(message)) is not None:
            tracker.see(event)
    assert not tracker.seen.complete and tracker.seen.output_bytes > 0  # charged by its bound
    (message,) = MessageSplitter().feed(aws.exception("throttlingException", "slow down"))
    assert is_exception(message) and converse_event(message) is None


def test_the_gate_lowers_a_converse_request_to_fit_and_settles_it_at_the_regional_price():
    events: list = []
    gate = Gate(Pricer(), cap_micro=60_000, on_event=events.append)
    admission = gate.admit(CONVERSE, BODY | {"inferenceConfig": {}}, model="claude-sonnet-4-5-20250929",
                           provider="anthropic", location="regional", platform=BEDROCK)  # fmt: skip
    assert isinstance(admission, Admission) and admission.lowered
    assert admission.body["inferenceConfig"]["maxTokens"] == admission.max_out < 4000  # written: Bedrock enforces it
    assert admission.ask.geo == BEDROCK_REGIONAL
    reply = gate.settle(admission, from_body(CONVERSE, {"usage": USAGE}))
    assert reply is not None and reply.details["charged"] == "usage"
    assert reply.details["inference_geo"] == BEDROCK_REGIONAL
    assert gate.spent_micro == Pricer().price(reply).cost_micro
    gate.set_cap(gate.spent_micro + 1_000)  # not even a reply of 1,024 tokens fits what is left
    refused = gate.admit(CONVERSE, BODY, model="claude-sonnet-4-5-20250929", provider="anthropic", platform=BEDROCK)
    assert isinstance(refused, Refused) and refused.at_cap


# ---- aider's Bedrock front


@pytest.fixture
def repo(tmp_path, monkeypatch):
    (tmp_path / "repo" / ".git").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "repo")
    return tmp_path / "repo"


ARGS = ["--model", f"bedrock/{MODEL}", "--weak-model", f"bedrock/{MODEL}"]
KEYS = {"AWS_ACCESS_KEY_ID": "AKIDUNITAIDER", "AWS_SECRET_ACCESS_KEY": "unit-secret"}


def test_aider_on_bedrock_with_a_key_or_credentials_is_fronted_at_litellms_endpoint_variable(repo):
    env = {"HOME": str(repo.parent), "AWS_REGION": "eu-west-1", "AWS_BEARER_TOKEN_BEDROCK": "ABSK"}
    fronts, _, _ = aider_fronts(ARGS, env)
    (front,) = fronts
    assert (front.mount, front.upstream, front.dialect, front.env) == (
        "bedrock", "https://bedrock-runtime.eu-west-1.amazonaws.com", BEDROCK, ("AWS_BEDROCK_RUNTIME_ENDPOINT",)
    )  # fmt: skip
    assert front.signer is None  # the key passes through
    signed = {"HOME": str(repo.parent), "AWS_REGION_NAME": "us-gov-west-1", **KEYS}
    (front,) = aider_fronts(ARGS, signed)[0]
    assert front.upstream == "https://bedrock-runtime-fips.us-gov-west-1.amazonaws.com"
    assert front.signer is not None and front.signer.how.region == "us-gov-west-1"
    own = {**signed, "AWS_BEDROCK_RUNTIME_ENDPOINT": "https://vpce-1.example"}
    assert aider_fronts(ARGS, own)[0][0].upstream == "https://vpce-1.example"


@pytest.mark.parametrize(
    ("env", "why"),
    [
        (KEYS, "no AWS region is set"),
        ({"AWS_REGION": "us-east-1.evil/x", **KEYS}, "is no AWS region"),
        ({"AWS_REGION": "us-east-1"}, "no AWS credentials were found"),
        ({"AWS_REGION": "us-east-1", "AWS_ROLE_NAME": "r", **KEYS}, "AWS_ROLE_NAME has litellm assume a role"),
        ({"AWS_REGION": "us-east-1", "AWS_PROFILE_NAME": "nope"}, "ProfileNotFound"),
    ],
)
def test_what_the_proxy_cannot_front_for_aider_on_bedrock_is_refused(repo, env, why):
    with pytest.raises(ConfigError, match=f"{why}.*--meter files"):
        aider_fronts(ARGS, {"HOME": str(repo.parent), **env})


def test_a_bedrock_endpoint_in_a_dotenv_is_refused(repo):
    (repo / ".env").write_text("AWS_BEDROCK_RUNTIME_ENDPOINT=http://elsewhere\n")
    with pytest.raises(ConfigError, match="AWS_BEDROCK_RUNTIME_ENDPOINT"):
        aider_fronts(ARGS, {"HOME": str(repo.parent), "AWS_REGION": "us-east-1", "AWS_BEARER_TOKEN_BEDROCK": "k"})


def test_a_converse_prompt_is_counted_by_bedrocks_count_tokens_with_its_prompt_fields():
    from capguard.metering.proxy import bounds
    from capguard.metering.proxy.dialects import count_tail

    assert count_tail(CONVERSE, f"model/{MODEL}/converse-stream") == f"model/{MODEL}/count-tokens"
    assert count_tail(CONVERSE, f"model/{MODEL}/invoke") is None  # not a Converse path
    big = {**BODY, "messages": [{"role": "user", "content": [{"text": "word " * 2_000}]}]}
    bound = bounds.input_bound(CONVERSE, big, bounds.Conversations())
    asked = bounds.count_request(CONVERSE, big, bound, "claude-sonnet-4-5-20250929", BEDROCK)
    assert asked == {"input": {"converse": {k: big[k] for k in ("system", "messages", "additionalModelRequestFields")}}}
    assert bounds.counted_bound(bound, {"inputTokens": 2_010}).tokens < bound.tokens
    # a field the count might not see: no count, the bytes' bound stays
    assert bounds.count_request(CONVERSE, {**big, "someNewField": 1}, bound, "m", BEDROCK) is None


def test_a_bedrock_model_that_is_not_anthropics_is_refused_at_start(repo):
    env = {"HOME": str(repo.parent), "AWS_REGION": "us-east-1", "AWS_BEARER_TOKEN_BEDROCK": "k"}
    with pytest.raises(ConfigError, match="amazon.nova-pro-v1:0 is not one of Anthropic's models"):
        aider_fronts(["--model", "bedrock/amazon.nova-pro-v1:0"], env)
    for model in ("bedrock/converse/anthropic.claude-3-5-haiku-20241022-v1:0", f"bedrock/invoke/{MODEL}"):
        assert aider_fronts(["--model", model, "--weak-model", model], env)[0][0].mount == "bedrock"


def test_a_server_that_gives_two_calls_one_id_loses_neither_from_the_ledger():
    """Each call the proxy settles is a call billed: a reply id given before (a hostile or broken server) gets a
    key of its own, so the ledger's dedupe cannot drop it."""
    gate = Gate(Pricer(), cap_micro=None)
    keys, spent = [], 0
    for _ in range(3):
        admission = gate.admit(
            CONVERSE, BODY, model="claude-sonnet-4-5-20250929", provider="anthropic", platform=BEDROCK
        )
        assert isinstance(admission, Admission)
        seen = from_body(CONVERSE, {"usage": USAGE})
        seen.response_id = "req-same"
        reply = gate.settle(admission, seen)
        assert reply is not None
        keys.append(reply.key)
        spent += Pricer().price(reply).cost_micro or 0
    assert len(set(keys)) == 3 and keys[0] == "proxy:converse:req-same"
    assert all(key.startswith("proxy:converse:repeated-") for key in keys[1:])
    assert gate.spent_micro == spent
