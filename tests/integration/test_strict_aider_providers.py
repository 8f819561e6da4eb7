"""Strict mode with the real aider on the providers besides OpenAI and Anthropic that litellm lets a variable
redirect: DeepSeek, OpenRouter, Groq, Cerebras, Together AI, Fireworks AI and Moonshot (OpenAI Chat Completions,
fake_chat) and Gemini through Google AI Studio
(generateContent / streamGenerateContent, fake_gemini). A runaway under a USD cap stops with the server's bill
within the cap, counted to the token at the provider's own prices (genai-prices' deepseek, openrouter, google);
a provider litellm cannot be redirected for is refused at start."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from capguard.core.events import Reply as UsageReply
from capguard.core.pricing import Pricer
from capguard.demo import fake_openai
from capguard.ledger import open_ledger
from tests.fakes.fake_chat import FakeChat
from tests.fakes.fake_gemini import FakeGemini
from tests.fakes.fake_gemini import Reply as GeminiReply
from tests.fakes.fake_gemini import Script as GeminiScript
from tests.integration.conftest import aider_flags
from tests.integration.proxy_secret import assert_no_proxy_secret
from tests.integration.test_strict_aider import RUNAWAY_INPUT, assert_tree_gone, runaway

pytestmark = pytest.mark.agent


def flags(model: str, *, stream: bool) -> list[str]:
    """aider's flags of the other strict tests, less the OpenAI base URL and key: the model's own provider's
    variables take them. The weak model is the main one (its provider fronted alike)."""
    base = aider_flags("unused", stream=stream, model=model)
    for name in ("--openai-api-base", "--openai-api-key"):
        at = base.index(name)
        del base[at : at + 2]
    return [*base, "--weak-model", model, "--no-fancy-input", "hello.py"]


def ledger_rows(report: dict) -> list[dict]:
    with open_ledger(Path(os.environ["CAPGUARD_HOME"]) / "ledger.db") as ledger:
        run, rows = ledger.run(report["run_id"]), ledger.usage(report["run_id"])
    assert run["exit_code"] == report["exit_code"] and run["stop_reason"] == report["stop_reason"]
    assert len(rows) == len(report["calls"])
    assert sum(row["cost_micro_usd"] for row in rows) == round(report["cost_usd"] * 1e6)
    return rows


def assert_counted_exactly(rows: list[dict], bill: dict[str, tuple[int, int]], prefix: str) -> None:
    """Every call the server billed is in the ledger once at what it billed (an upper bound for one cut at the
    stop), none invented."""
    keys = [row["dedupe_key"].removeprefix(prefix) for row in rows]
    assert len(set(keys)) == len(keys)
    assert set(keys) == set(bill), (keys, list(bill))
    for row, key in zip(rows, keys):
        micro, tokens = bill[key]
        counted = row["input_tokens"] + row["output_tokens"] + row["cache_read_tokens"] + row["cache_write_tokens"]
        if row["details"]["charged"] == "usage":
            assert (row["cost_micro_usd"], counted) == (micro, tokens)
        else:
            assert row["cost_micro_usd"] >= micro and counted >= tokens


def chat_bills(server: FakeChat, provider: str) -> dict[str, tuple[int, int]]:
    """Each call the fake billed: (micro-USD at `provider`'s genai-prices, tokens)."""
    pricer, out = Pricer(), {}
    for record in server.billed():
        usage = record["usage"]
        cached = usage["prompt_tokens_details"]["cached_tokens"]
        reply = UsageReply(
            "billed",
            f"{provider}/{record['body']['model']}",
            input_tokens=usage["prompt_tokens"] - cached,
            output_tokens=usage["completion_tokens"],
            cache_read_tokens=cached,
        )
        price = pricer.price(reply)
        assert price.cost_micro, reply.model  # priced by that provider's prices, not a fallback
        out[record["id"]] = (price.cost_micro, reply.tokens)
    return out


CHAT_PROVIDERS = [  # (model, the variable litellm reads, its key's variable, the model sent, priced as)
    ("deepseek/deepseek-chat", "DEEPSEEK_API_BASE", "DEEPSEEK_API_KEY", "deepseek-chat", "deepseek"),
    ("openrouter/openai/gpt-4o", "OPENROUTER_API_BASE", "OPENROUTER_API_KEY", "openai/gpt-4o", "openrouter"),
    ("groq/llama-3.3-70b-versatile", "GROQ_API_BASE", "GROQ_API_KEY", "llama-3.3-70b-versatile", "groq"),
    ("cerebras/llama3.1-8b", "CEREBRAS_API_BASE", "CEREBRAS_API_KEY", "llama3.1-8b", "cerebras"),
    ("together_ai/meta-llama/Llama-3.3-70B-Instruct-Turbo", "TOGETHER_AI_API_BASE", "TOGETHERAI_API_KEY",
     "meta-llama/Llama-3.3-70B-Instruct-Turbo", "together_ai"),
    ("fireworks_ai/accounts/fireworks/models/deepseek-v3-0324", "FIREWORKS_API_BASE", "FIREWORKS_API_KEY",
     "accounts/fireworks/models/deepseek-v3-0324", "fireworks_ai"),
    ("moonshot/kimi-k2-0905-preview", "MOONSHOT_API_BASE", "MOONSHOT_API_KEY", "kimi-k2-0905-preview", "moonshot"),
]  # fmt: skip
# DeepSeek and OpenRouter both ways; each provider added later in one way (the proxy's Chat path is the same)
CHAT_CASES = [
    *[(*CHAT_PROVIDERS[i], stream) for i in (0, 1) for stream in (False, True)],
    *[(*provider, i % 2 == 0) for i, provider in enumerate(CHAT_PROVIDERS[2:])],
]


@pytest.mark.parametrize(
    ("model", "variable", "key", "sent", "priced", "stream"),
    CHAT_CASES,
    ids=[f"{case[4]}-{'stream' if case[5] else 'no-stream'}" for case in CHAT_CASES],
)
def test_a_chat_provider_runaway_stops_at_the_usd_cap_priced_by_its_provider(
    capguard, model, variable, key, sent, priced, stream
):
    with FakeChat(runaway()) as server:
        capguard.env[variable] = server.base_url  # the user's own base URL: the proxy forwards there
        capguard.env[key] = "sk-fake"
        result = capguard.run(
            ["--strict", "--usd", "0.05"], flags(model, stream=stream), input=RUNAWAY_INPUT, timeout=240
        )
    report = result.report
    assert result.rc == 122, result.stderr
    assert report["stop_reason"] == "usd" and report["overshoot"] == 0
    assert report["meter"] == "both"  # the proxy caps; aider's analytics log is compared with it
    bill = chat_bills(server, priced)
    assert bill and sum(m for m, _ in bill.values()) <= 50_000
    assert {r["body"]["model"] for r in server.requests} == {sent}
    assert all(r["stream"] == stream for r in server.requests if r["kind"] == "main")
    rows = ledger_rows(report)
    assert {row["model"] for row in rows} == {f"{priced}/{sent}"}
    assert_counted_exactly(rows, bill, "proxy:chat:")
    assert_no_proxy_secret(result.stdout, result.stderr)
    assert_tree_gone(capguard)


def gemini_runaway() -> GeminiScript:
    """Every reply a never-applying edit: the fake's main replies (a stream) and its other answers (generateContent
    is, to the fake, a Gemini CLI side call) alike."""
    text = fake_openai.runaway_edit_text("hello.py") + "x" * 6000
    return GeminiScript([GeminiReply(text, delay_s=0.1)], utility_text=text)


def gemini_bills(server: FakeGemini) -> dict[str, tuple[int, int]]:
    pricer, out = Pricer(), {}
    for record in server.billed():
        usage = record["usage"]
        reply = UsageReply(
            "billed",
            "google/" + record["model"],
            input_tokens=usage["input"] - usage["cached"] + usage["tool"],
            output_tokens=usage["output"] + usage["thoughts"],
            cache_read_tokens=usage["cached"],
        )
        price = pricer.price(reply)
        assert price.cost_micro, reply.model
        out[record["id"]] = (price.cost_micro, reply.tokens)
    return out


@pytest.mark.parametrize("stream", [False, True], ids=["no-stream", "stream"])
def test_a_gemini_runaway_stops_at_the_usd_cap_priced_by_google(capguard, stream):
    with FakeGemini(gemini_runaway()) as server:
        capguard.env["GEMINI_API_BASE"] = server.base_url + "/v1beta"  # litellm appends /models/<model>:<method>
        capguard.env["GEMINI_API_KEY"] = "fake-key"
        result = capguard.run(
            ["--strict", "--usd", "0.05"],
            flags("gemini/gemini-2.5-flash", stream=stream),
            input=RUNAWAY_INPUT,
            timeout=240,
        )
    report = result.report
    assert result.rc == 122, result.stderr
    assert report["stop_reason"] == "usd" and report["overshoot"] == 0
    assert report["meter"] == "both"  # the proxy caps; aider's analytics log is compared with it
    bill = gemini_bills(server)
    assert bill and sum(m for m, _ in bill.values()) <= 50_000
    assert set(server.seen_models()) == {"gemini-2.5-flash"}
    assert {r["method"] for r in server.requests} == {"streamGenerateContent" if stream else "generateContent"}
    rows = ledger_rows(report)
    assert {row["model"] for row in rows} == {"google/gemini-2.5-flash"}
    assert_counted_exactly(rows, bill, "proxy:gemini:")
    assert_no_proxy_secret(result.stdout, result.stderr)
    assert_tree_gone(capguard)


@pytest.mark.parametrize(("model", "word"), [("xai/grok-3-mini", "'xai'"), ("mistral/x", "'mistral'")])
def test_a_provider_litellm_cannot_redirect_by_a_variable_is_refused_at_start(capguard, model, word):
    result = capguard.run(["--strict", "--usd", "1"], flags(model, stream=False), timeout=60)
    assert result.rc == 2 and result.report is None
    line = result.stderr.strip()
    assert (
        "\n" not in line
        and word in line
        and "Moonshot and Anthropic's models on Amazon Bedrock" in line
        and "Traceback" not in line
    )
    assert_tree_gone(capguard)
