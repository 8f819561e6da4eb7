"""Caps per model and allowed/denied models in the metering proxy, with the real anthropic and openai SDKs against
fake servers that bill like real ones: a model's cap holds exactly (its reservation counts against that model's
remaining too), other models go on, and a refused model never reaches the server."""

from __future__ import annotations

import anthropic
import openai
import pytest

from capguard.core.events import Reply
from capguard.core.model_caps import ModelCap, ModelRules
from capguard.metering.proxy import Refused
from tests.integration.test_metering_proxy import KEY, billed_micro, fake_for, proxied


def ask(client: anthropic.Anthropic, model: str, history: list) -> str:
    return client.messages.create(model=model, max_tokens=16_000, messages=history).content[0].text


def billed_tokens(fake, prefix: str) -> int:
    total = 0
    for record in fake.requests:
        usage = record.get("usage")
        if usage and record["model"].startswith(prefix):
            total += sum(usage[k] for k in ("input_tokens", "output_tokens", "cache_read_input_tokens",
                                            "cache_creation_input_tokens"))  # fmt: skip
    return total


def test_a_runaway_on_a_capped_model_stops_at_its_cap_and_other_models_go_on():
    rules = ModelRules(caps=(ModelCap("claude-opus-*", usd_micro=500_000),))
    with proxied(fake_for("anthropic"), "anthropic", 5_000_000, models=rules) as proxy:
        client = anthropic.Anthropic(base_url=proxy.base_url("up"), api_key=KEY, max_retries=0)
        history: list = [{"role": "user", "content": "start " * 400}]
        for turn in range(100):
            try:
                text = ask(client, "claude-opus-4-1", history)
            except anthropic.BadRequestError as err:
                assert "the $0.50 cap on claude-opus-* reached" in str(err)
                break
            history += [{"role": "assistant", "content": text}, {"role": "user", "content": "go on"}]
        else:
            pytest.fail("the model's cap never refused the runaway")
        opus = billed_micro(proxy.fake, "anthropic")
        assert turn >= 2 and opus <= 500_000  # overshoot 0 on the model's own cap
        assert any(e.details["lowered"] for e in proxy.events if isinstance(e, Reply))
        refusal = proxy.events[-1]
        assert isinstance(refusal, Refused) and refusal.at_cap
        assert ask(client, "claude-sonnet-4-5", [{"role": "user", "content": "hi"}])  # its cap is not this one's
        assert proxy.gate.spent_micro == billed_micro(proxy.fake, "anthropic") and proxy.gate.held_micro == 0


def test_a_token_cap_on_a_model_holds_the_prompt_and_lowers_max_tokens():
    rules = ModelRules(caps=(ModelCap("anthropic/claude-sonnet-*", tokens=20_000),))
    with proxied(fake_for("anthropic"), "anthropic", None, models=rules) as proxy:
        client = anthropic.Anthropic(base_url=proxy.base_url("up"), api_key=KEY, max_retries=0)
        history: list = [{"role": "user", "content": "start " * 400}]
        for _ in range(100):
            try:
                text = ask(client, "claude-sonnet-4-5", history)
            except anthropic.BadRequestError as err:
                assert "20,000-token cap on anthropic/claude-sonnet-*" in str(err)
                break
            history += [{"role": "assistant", "content": text}, {"role": "user", "content": "go on"}]
        else:
            pytest.fail("the token cap never refused the runaway")
        assert 0 < billed_tokens(proxy.fake, "claude-sonnet") <= 20_000
        sent = [r for r in proxy.fake.requests if r["kind"] == "main"]  # not the proxy's count_tokens calls
        assert max(r["body"]["max_tokens"] for r in sent) == 16_000
        assert min(r["body"]["max_tokens"] for r in sent) < 16_000  # lowered to fit the last tokens


def test_models_outside_the_allowed_list_are_refused_in_openais_format():
    rules = ModelRules(allow=("gpt-4o-mini", "gpt-5*"))
    with proxied(fake_for("chat"), "chat", 1_000_000, models=rules) as proxy:
        client = openai.OpenAI(base_url=proxy.base_url("up"), api_key=KEY, max_retries=0)
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
        assert "model gpt-4o is not in the allowed models" in err.value.body["message"]
        assert err.value.body["code"] == "capguard_refused"
        reply = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
        assert reply.choices[0].message.content
        assert [r["model"] for r in proxy.fake.requests] == ["gpt-4o-mini"]  # the refused one never left
        refused = [e for e in proxy.events if isinstance(e, Refused)]
        assert len(refused) == 1 and not refused[0].at_cap
