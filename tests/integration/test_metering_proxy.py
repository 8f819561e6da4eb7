"""Strict mode's metering proxy alone, with the real anthropic and openai SDKs against fake servers that bill like
real ones: replies pass through, every call is settled at what the server billed, and a runaway stops at the cap
with overshoot 0 (streaming or not, one request at a time or ten racing)."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import logging
import re
import threading
from typing import ClassVar

import anthropic
import httpx
import openai
import pytest

from capguard.core.events import Reply
from capguard.core.model_caps import ModelRules
from capguard.core.pricing import Pricer
from capguard.metering.proxy import Gate, MeteringProxy, Refused
from tests.fakes import fake_anthropic, fake_chat, fake_responses

KEY = "sk-test-0123456789-secret-key"


@contextlib.contextmanager
def proxied(fake, dialect: str, cap: int | None, **gate_options):
    events: list = []
    gate = Gate(Pricer(), cap_micro=cap, on_event=events.append, **gate_options)
    with fake, MeteringProxy(gate, {"up": fake.base_url}, dialects={"up": dialect}) as proxy:
        proxy.events = events
        proxy.fake = fake
        yield proxy


def billed_micro(fake, dialect: str) -> int:
    """What the fake server billed, priced as capguard prices a Reply."""
    pricer, total = Pricer(), 0
    for record in fake.requests:
        usage = record.get("usage")
        if not usage or (dialect == "responses" and not record["billed"]):
            continue
        if dialect == "anthropic":
            reply = Reply("b", "anthropic/" + record["model"], input_tokens=usage["input_tokens"],
                          output_tokens=usage["output_tokens"], cache_read_tokens=usage["cache_read_input_tokens"],
                          cache_write_tokens=usage["cache_creation_input_tokens"])  # fmt: skip
        else:
            prompt, out = (
                ("prompt_tokens", "completion_tokens") if dialect == "chat" else ("input_tokens", "output_tokens")
            )
            details = usage["prompt_tokens_details" if dialect == "chat" else "input_tokens_details"]
            cached = details["cached_tokens"]
            reply = Reply("b", record["model"], input_tokens=usage[prompt] - cached, output_tokens=usage[out],
                          cache_read_tokens=cached)  # fmt: skip
        total += pricer.price(reply).cost_micro
    return total


LONG = "word " * 2000  # 10,000 bytes: 2,500 tokens at the fakes' 4 bytes a token


def fake_for(dialect: str, **kw):
    if dialect == "chat":
        return fake_chat.FakeChat(fake_chat.Script(generate=lambda n: fake_chat.Reply(LONG, **kw), cache=True))
    if dialect == "responses":
        return fake_responses.FakeResponses(fake_responses.Script([fake_responses.say(LONG, **kw)]))
    usage = fake_anthropic.Usage(input_tokens=900, output_tokens=2_500, cache_write_5m=0, cache_read=0)
    return fake_anthropic.FakeAnthropic(fake_anthropic.Script(usage=usage, honor_max_tokens=True, text=LONG, **kw))


def one_turn(proxy, dialect: str, history: list, stream: bool) -> str:
    """One request of a growing conversation through the proxy; the reply's text."""
    if dialect == "anthropic":
        client = anthropic.Anthropic(base_url=proxy.base_url("up"), api_key=KEY, max_retries=0)
        args = dict(model="claude-sonnet-4-5", max_tokens=16_000, messages=history)
        if stream:
            with client.messages.stream(**args) as s:
                return s.get_final_text()
        return client.messages.create(**args).content[0].text
    client = openai.OpenAI(base_url=proxy.base_url("up"), api_key=KEY, max_retries=0)
    if dialect == "chat":
        if stream:
            chunks = client.chat.completions.create(model="gpt-4o", messages=history, stream=True)
            return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        return client.chat.completions.create(model="gpt-4o", messages=history).choices[0].message.content
    if stream:
        return "".join(e.delta for e in client.responses.create(model="gpt-4o", input=history, stream=True)
                       if e.type == "response.output_text.delta")  # fmt: skip
    return client.responses.create(model="gpt-4o", input=history).output_text


REFUSED = (anthropic.BadRequestError, openai.BadRequestError)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("dialect", ["anthropic", "chat", "responses"])
def test_runaway_through_the_proxy_ends_with_billed_cost_within_the_cap(dialect, stream):
    cap = 250_000  # $0.25
    with proxied(fake_for(dialect), dialect, cap) as proxy:
        history: list = [{"role": "user", "content": "start " * 400}]
        for turn in range(100):
            try:
                text = one_turn(proxy, dialect, history, stream)
            except REFUSED as err:
                assert "spending cap of $0.25 reached" in str(err)
                break
            history += [{"role": "assistant", "content": text}, {"role": "user", "content": "go on"}]
        else:
            pytest.fail("the runaway was never refused")
        billed = billed_micro(proxy.fake, dialect)
        assert turn >= 3 and billed <= cap  # overshoot 0
        assert proxy.gate.spent_micro == billed  # every call settled at what the server billed
        assert proxy.gate.held_micro == 0
        replies = [e for e in proxy.events if isinstance(e, Reply)]
        assert len(replies) == turn and all(r.details["charged"] == "usage" for r in replies)
        assert any(r.details["lowered"] for r in replies)  # max tokens came down to fit the last headroom
        assert isinstance(proxy.events[-1], Refused) and proxy.events[-1].at_cap


async def racing(proxy, n: int) -> list:
    client = openai.AsyncOpenAI(base_url=proxy.base_url("up"), api_key=KEY, max_retries=0)
    ask = dict(model="gpt-4o", messages=[{"role": "user", "content": "race"}], max_completion_tokens=4_000)
    try:
        return await asyncio.gather(*(client.chat.completions.create(**ask) for _ in range(n)), return_exceptions=True)
    finally:
        await client.close()


def test_ten_requests_racing_for_the_last_headroom_never_overshoot():
    cap = 100_000  # $0.10: room for two replies of 4,000 tokens ($0.04 each) at most, not ten
    with proxied(fake_for("chat", delay_s=0.3), "chat", cap) as proxy:
        results = asyncio.run(racing(proxy, 10))
        refused = [r for r in results if isinstance(r, openai.BadRequestError)]
        answered = [r for r in results if not isinstance(r, BaseException)]
        assert len(refused) + len(answered) == 10 and refused and answered
        assert billed_micro(proxy.fake, "chat") == proxy.gate.spent_micro <= cap
        assert len(proxy.fake.requests) == len(answered)  # a refused request never reached the server


def test_a_stream_cut_short_is_charged_at_least_what_the_server_billed():
    with proxied(fake_chat.FakeChat(fake_chat.Script([fake_chat.Reply(LONG, cut_after=2)])), "chat", 1_000_000) as p:
        client = openai.OpenAI(base_url=p.base_url("up"), api_key=KEY, max_retries=0)
        with pytest.raises((openai.APIError, httpx.HTTPError)):
            for _ in client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}],
                                                    stream=True, max_tokens=5000):  # fmt: skip
                pass
        billed = billed_micro(p.fake, "chat")
        wait_for(lambda: p.gate.held_micro == 0)
        (reply,) = [e for e in p.events if isinstance(e, Reply)]
        assert reply.details["charged"] == "bound"
        assert 0 < billed <= p.gate.spent_micro  # an upper bound, never zero


def test_a_denied_or_unpriceable_model_is_refused_in_the_providers_format():
    with proxied(fake_for("anthropic"), "anthropic", 1_000_000, models=ModelRules(deny=("claude-opus-*",))) as proxy:
        client = anthropic.Anthropic(base_url=proxy.base_url("up"), api_key=KEY, max_retries=0)
        with pytest.raises(anthropic.BadRequestError, match="denied by the configuration"):
            client.messages.create(model="claude-opus-4-1", max_tokens=100, messages=[{"role": "user", "content": "x"}])
        with pytest.raises(anthropic.BadRequestError, match="cannot price model"):
            client.messages.create(model="claude-nobody-9", max_tokens=100, messages=[{"role": "user", "content": "x"}])
        assert proxy.fake.requests == []


def deeply_nested(levels: int) -> dict:
    inner: dict = {}
    for _ in range(levels):
        inner = {"x": inner}
    return inner


@pytest.mark.parametrize("mark", [{"cache_control": {"type": "ephemeral"}}, {"type": "image"}])
def test_a_request_nested_too_deeply_to_bound_is_refused_not_sent(mark, caplog):
    """Nested deeper than Python's walks go (the JSON decoder allows it): a refusal the agent can show, one line in
    the provider's format, and nothing sent or logged as an error (no traceback in the agent's terminal)."""
    caplog.set_level(logging.ERROR)
    block = {"type": "text", "text": "x", **mark, "deep": deeply_nested(700)}
    with proxied(fake_for("anthropic"), "anthropic", 1_000_000) as proxy:
        body = {"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": [{"role": "user", "content": [block]}]}
        answer = httpx.post(f"{proxy.base_url('up')}/v1/messages", json=body, timeout=30)
        assert answer.status_code == 400
        assert answer.json()["error"]["message"] == "capguard cannot bound a request nested this deeply"
        assert proxy.fake.requests == []
        assert [type(e).__name__ for e in proxy.events] == ["Refused"]
    assert not [r for r in caplog.records if r.name.startswith(("capguard", "aiohttp"))]


class _OddStream(http.server.BaseHTTPRequestHandler):
    """A chat server whose stream holds an event of a shape no API sends: `choices` as a number."""

    events = (
        b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n',
        b'data: {"id":"c1","choices":5,"usage":{"prompt_tokens":3,"completion_tokens":1}}\n\n',
        b"data: [DONE]\n\n",
    )

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        body = b"".join(self.events)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_stream_event_of_a_shape_no_api_sends_passes_through_and_is_charged_the_bound(caplog):
    """A model server's numbers are untrusted: an event capguard cannot read reaches the agent unchanged, the call is
    charged by its bound (its whole output limit), and nothing raises or is logged as an error."""
    caplog.set_level(logging.ERROR)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _OddStream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    events: list = []
    gate = Gate(Pricer(), cap_micro=1_000_000, on_event=events.append)
    try:
        with MeteringProxy(gate, {"up": f"http://127.0.0.1:{server.server_address[1]}"}, dialects={"up": "chat"}) as p:
            body = {"model": "gpt-4o", "max_tokens": 300, "stream": True, "messages": [{"role": "user", "content": "x"}],
                    "stream_options": {"include_usage": True}}  # fmt: skip
            answer = httpx.post(f"{p.base_url('up')}/chat/completions", json=body, timeout=30)
    finally:
        server.shutdown()
        server.server_close()
    assert answer.status_code == 200 and answer.content == b"".join(_OddStream.events)
    (reply,) = [e for e in events if isinstance(e, Reply)]
    assert reply.details["charged"] == "bound" and reply.output_tokens == 300
    assert "cannot read" in reply.suspicious
    assert gate.spent_micro == reply.details["reserved_micro"] > 0
    assert not [r for r in caplog.records if r.name.startswith(("capguard", "aiohttp"))]


def test_the_agents_key_passes_through_and_is_never_logged(caplog):
    caplog.set_level(logging.DEBUG)
    with proxied(fake_for("anthropic"), "anthropic", None) as proxy:
        one_turn(proxy, "anthropic", [{"role": "user", "content": "hi"}], stream=True)
        sent = proxy.fake.requests[0]["headers"]["authorization"]  # this SDK sends the key as a bearer token
        assert sent == ("Bearer " + KEY)[:10] + "..."  # as the fake redacts it: it arrived
    ours = [r for r in caplog.records if r.name.startswith(("capguard", "aiohttp"))]  # the SDK logs its own
    assert not any(KEY in r.getMessage() for r in ours)


def test_free_paths_pass_and_costly_ones_are_refused_unmetered():
    with proxied(fake_for("anthropic"), "anthropic", 1_000_000) as proxy:
        base = proxy.base_url("up")
        assert httpx.get(f"{base}/v1/models").json()["data"]
        counted = httpx.post(f"{base}/v1/messages/count_tokens", json={"model": "m", "messages": []})
        assert counted.status_code == 200
        batch = httpx.post(f"{base}/v1/messages/batches", json={"requests": []})
        assert batch.status_code == 403 and "unmetered" in batch.json()["error"]["message"]
        wrong = base.replace(proxy._secret, "not-the-secret")
        assert httpx.post(f"{wrong}/v1/messages", json={}).status_code == 404
        assert [r["kind"] for r in proxy.fake.requests] == ["count_tokens"]


def test_a_stopped_proxy_refuses_connections():
    with proxied(fake_for("chat"), "chat", 1_000_000) as proxy:
        base = proxy.base_url("up")
        proxy.stop()
        with pytest.raises(httpx.ConnectError):
            httpx.post(f"{base}/chat/completions", json={"model": "gpt-4o", "messages": []})


def test_a_chat_stream_passes_byte_for_byte_and_hides_the_usage_chunk_nobody_asked_for():
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    asked = {**body, "stream_options": {"include_usage": True}}
    same = re.compile(rb'chatcmpl-fake-\d+|"created": \d+')
    with proxied(fake_chat.FakeChat(fake_chat.chat_script("a reply in pieces")), "chat", 1_000_000) as proxy:
        direct = httpx.post(f"{proxy.fake.base_url}/chat/completions", json=asked).content
        through = httpx.post(f"{proxy.base_url('up')}/chat/completions", json=asked).content
        assert same.sub(b"", through) == same.sub(b"", direct)
        plain = httpx.post(f"{proxy.base_url('up')}/chat/completions", json=body).content
        assert b'"usage"' not in plain and plain.endswith(b"data: [DONE]\n\n")
        assert proxy.fake.requests[-1]["include_usage"] is True  # asked of the server all the same
        assert len([e for e in proxy.events if isinstance(e, Reply)]) == 2


def test_an_upstream_error_reaches_the_agent_unchanged_and_costs_nothing():
    script = fake_anthropic.Script(error_status=529)
    with proxied(fake_anthropic.FakeAnthropic(script), "anthropic", 1_000_000) as proxy:
        client = anthropic.Anthropic(base_url=proxy.base_url("up"), api_key=KEY, max_retries=0)
        with pytest.raises(anthropic.APIStatusError) as err:
            client.messages.create(
                model="claude-sonnet-4-5", max_tokens=100, messages=[{"role": "user", "content": "x"}]
            )
        assert err.value.status_code == 529 and err.value.body["error"]["type"] == "overloaded_error"
        assert (proxy.gate.spent_micro, proxy.gate.held_micro) == (0, 0)


def wait_for(condition, timeout: float = 5.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


# ---- the provider's count of a prompt, asked when the bytes' bound would lower the request


@contextlib.contextmanager
def count_proxied(fake, dialect: str, cap: int, **proxy_options):
    gate = Gate(Pricer(), cap_micro=cap)
    with fake, MeteringProxy(gate, {"up": fake.base_url}, dialects={"up": dialect}, **proxy_options) as proxy:
        yield gate, proxy


def test_a_responses_request_the_bytes_would_lower_is_held_at_its_input_tokens_count():
    fake = fake_responses.FakeResponses(fake_responses.Script([fake_responses.say("done")]))
    with count_proxied(fake, "responses", 150_000) as (gate, proxy):  # gpt-4o: 16k out ($0.16) never fits
        client = openai.OpenAI(base_url=proxy.base_url("up"), api_key=KEY, max_retries=0)
        client.responses.create(model="gpt-4o", input=LONG, instructions="Be terse.", max_output_tokens=16_000)
    (asked,) = fake.counted
    assert asked == {"model": "gpt-4o", "input": LONG, "instructions": "Be terse."}  # no max_output_tokens
    (sent,) = fake.billed()
    billed_prompt = sent["usage"]["input_tokens"]
    # held at the count and its margin: max_output_tokens lowered less than by the bytes (~4x the count)
    by_bytes = Gate(Pricer(), cap_micro=150_000).admit("responses", sent["body"] | {"max_output_tokens": 16_000})
    assert sent["body"]["max_output_tokens"] > by_bytes.max_out
    assert gate.spent_micro <= 150_000 and billed_prompt > 2_000


@pytest.mark.parametrize("counts", [True, False], ids=["openai", "no-count-endpoint"])
def test_a_chat_request_the_bytes_would_lower_is_held_at_openais_responses_count(counts):
    """Chat Completions has no count: OpenAI's Responses count takes the same prompt. A server without it (a 404)
    leaves the bytes' bound, as before."""
    fake = fake_chat.FakeChat(fake_chat.Script([fake_chat.Reply("done")], counts=counts))
    with count_proxied(fake, "chat", 150_000) as (gate, proxy):  # gpt-4o: 16k out ($0.16) never fits
        client = openai.OpenAI(base_url=proxy.base_url("up"), api_key=KEY, max_retries=0)
        client.chat.completions.create(
            model="gpt-4o", max_tokens=16_000,
            messages=[{"role": "system", "content": "Be terse."}, {"role": "user", "content": LONG}],
        )  # fmt: skip
    (sent,) = fake.billed()
    by_bytes = Gate(Pricer(), cap_micro=150_000).admit("chat", sent["body"] | {"max_tokens": 16_000})
    if counts:
        (asked,) = fake.counted
        assert asked["body"] == {
            "model": "gpt-4o",
            "input": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": LONG}],
        }  # no max_tokens
        assert asked["input_tokens"] == sent["usage"]["prompt_tokens"]  # the fake counts as it bills
        assert sent["body"]["max_tokens"] > by_bytes.max_out  # lowered less than by the bytes (~4x the count)
    else:
        assert not fake.counted and sent["body"]["max_tokens"] == by_bytes.max_out  # as if none had been asked
    assert gate.spent_micro <= 150_000 and sent["usage"]["prompt_tokens"] > 2_000


def test_a_chat_request_to_another_providers_api_is_never_counted_by_openais():
    fake = fake_chat.FakeChat(fake_chat.Script([fake_chat.Reply("done")]))
    gate = Gate(Pricer(), cap_micro=5_000, providers={"chat": "deepseek"})  # the bytes would lower it
    with (
        fake,
        MeteringProxy(gate, {"up": fake.base_url}, dialects={"up": "chat"}, providers={"up": "deepseek"}) as proxy,
    ):
        client = openai.OpenAI(base_url=proxy.base_url("up"), api_key=KEY, max_retries=0)
        client.chat.completions.create(
            model="deepseek-chat", max_tokens=8_000, messages=[{"role": "user", "content": LONG}]
        )
    (sent,) = fake.billed()
    assert not fake.counted and sent["body"]["max_tokens"] < 8_000


def test_a_count_that_does_not_answer_in_time_leaves_the_bytes_bound():
    usage = fake_anthropic.Usage(input_tokens=0, output_tokens=100, cache_write_5m=0, cache_read=0)
    script = fake_anthropic.Script(usage=usage, honor_max_tokens=True, bill_prompt=True, count_mode="slow")
    fake = fake_anthropic.FakeAnthropic(script)
    body = {"model": "claude-sonnet-4-5", "max_tokens": 16_000, "messages": [{"role": "user", "content": LONG}]}
    with count_proxied(fake, "anthropic", 100_000, count_timeout=0.3) as (gate, proxy):
        client = anthropic.Anthropic(base_url=proxy.base_url("up"), api_key=KEY, max_retries=0)
        client.messages.create(**body)
    assert fake.count("count_tokens") == 1 and fake.count("main") == 1
    sent = next(r for r in fake.requests if r["kind"] == "main")
    by_bytes = Gate(Pricer(), cap_micro=100_000).admit("anthropic", body)
    assert sent["body"]["max_tokens"] == by_bytes.max_out  # as if no count had been asked
    assert gate.spent_micro <= 100_000


@pytest.mark.parametrize("stream", [False, True])
def test_claude_on_vertex_goes_to_the_host_of_its_location_and_is_settled_at_its_premium(monkeypatch, stream):
    """The real SDK's Vertex client, through a mount with no base URL of the user's: each request goes on to the
    host of the location in its path (here each location's host stands for the fake), with the agent's token, and
    is settled at what the fake billed, 1.1x on a regional endpoint; a name no location has is sent nowhere."""
    from capguard.core.pricing import VERTEX_REGIONAL
    from capguard.metering.proxy import server
    from capguard.metering.proxy.dialects import VERTEX, VERTEX_BY_LOCATION, vertex_base

    fake = fake_for("anthropic")
    hosts: list[str] = []

    def base_of(location: str) -> str | None:
        real = vertex_base(location)
        if real is not None:
            hosts.append(real)
        return None if real is None else f"{fake.base_url}/v1"

    monkeypatch.setattr(server, "vertex_base", base_of)
    events: list = []
    gate = Gate(Pricer(), cap_micro=1_000_000, on_event=events.append)
    upstreams, styles = {"vertex": VERTEX_BY_LOCATION}, {"vertex": VERTEX}
    with fake, MeteringProxy(gate, upstreams, dialects=styles, providers={"vertex": "anthropic"}) as proxy:
        for region in ("us-east5", "global"):
            client = anthropic.AnthropicVertex(
                region=region, project_id="my-proj", access_token="ya29.token", base_url=proxy.base_url("vertex"),
                max_retries=0,
            )  # fmt: skip
            args = dict(model="claude-opus-5-5", max_tokens=3_000, messages=[{"role": "user", "content": "hi"}])
            if stream:
                with client.messages.stream(**args) as s:
                    assert s.get_final_text() == LONG
            else:
                assert client.messages.create(**args).content[0].text == LONG
        nowhere = anthropic.AnthropicVertex(
            region="nowhere", project_id="my-proj", access_token="ya29.token", base_url=proxy.base_url("vertex"),
            max_retries=0,
        )  # fmt: skip
        with pytest.raises(anthropic.BadRequestError, match="'nowhere' is no Vertex AI location"):
            nowhere.messages.create(**args)
    assert hosts == ["https://us-east5-aiplatform.googleapis.com/v1", "https://aiplatform.googleapis.com/v1"]
    served = [r for r in fake.requests if r.get("usage")]
    assert [r["vertex_location"] for r in served] == ["us-east5", "global"]  # nothing went on for "nowhere"
    assert all(r["headers"]["authorization"] == "Bearer ya2..." for r in served)  # the fake keeps 10 characters
    replies = [e for e in events if isinstance(e, Reply)]
    assert [r.details["charged"] for r in replies] == ["usage", "usage"]
    assert [r.details["inference_geo"] for r in replies] == [VERTEX_REGIONAL, None]
    pricer = Pricer()
    for record, reply in zip(served, replies, strict=True):
        usage = record["usage"]
        geo = VERTEX_REGIONAL if record["vertex_location"] != "global" else None
        bill = Reply("b", "anthropic/" + record["model"], input_tokens=usage["input_tokens"],
                     output_tokens=usage["output_tokens"], details={"inference_geo": geo})  # fmt: skip
        assert pricer.price(reply).cost_micro == pricer.price(bill).cost_micro
    assert gate.spent_micro == sum(pricer.price(r).cost_micro for r in replies)


@pytest.mark.parametrize("stream", [True, False])
def test_the_sdks_bedrock_mantle_client_is_metered_at_the_regional_premium(stream):
    """The real SDK's Claude-in-Amazon-Bedrock client (bedrock-mantle) with a Bedrock API key, through a Mantle
    mount: Bedrock's model id goes on as sent and is priced as Anthropic's model, at the 10% of a regional
    endpoint; a request for Bedrock's priority tier, which costs more, or through a guardrail, billed apart, is
    refused before it goes."""
    from capguard.core.pricing import BEDROCK_REGIONAL
    from capguard.metering.proxy.dialects import MANTLE

    fake = fake_for("anthropic")
    events: list = []
    gate = Gate(Pricer(), cap_micro=1_000_000, on_event=events.append)
    with (
        fake,
        MeteringProxy(
            gate,
            {"mantle": fake.base_url + fake_anthropic.MANTLE_PREFIX},  # the fake's port: once it is started
            dialects={"mantle": MANTLE},
            providers={"mantle": "anthropic"},
        ) as proxy,
    ):
        client = anthropic.AnthropicBedrockMantle(api_key="ABSK-key", base_url=proxy.base_url("mantle"), max_retries=0)
        args = dict(model="anthropic.claude-opus-5-5", max_tokens=3_000, messages=[{"role": "user", "content": "hi"}])
        if stream:
            with client.messages.stream(**args) as s:
                assert s.get_final_text() == LONG
        else:
            assert client.messages.create(**args).content[0].text == LONG
        priority = client.with_options(default_headers={"X-Amzn-Bedrock-Service-Tier": "priority"})
        with pytest.raises(anthropic.BadRequestError, match="cannot price Bedrock's 'priority' service tier"):
            priority.messages.create(**args)
        guarded = client.with_options(default_headers={"X-Amzn-Bedrock-GuardrailIdentifier": "gr-1"})
        with pytest.raises(anthropic.BadRequestError, match="cannot price Bedrock Guardrails"):
            guarded.messages.create(**args)
    (served,) = [r for r in fake.requests if r.get("usage")]  # the refused requests went nowhere
    assert served["platform"] == "mantle" and served["model"] == "anthropic.claude-opus-5-5"
    assert served["headers"]["authorization"] == "Bearer ABS..."  # the fake keeps 10 characters
    (reply,) = [e for e in events if isinstance(e, Reply)]
    assert reply.model == "anthropic/claude-opus-5-5" and reply.details["charged"] == "usage"
    usage = served["usage"]
    bill = Reply("b", "anthropic/claude-opus-5-5", input_tokens=usage["input_tokens"],
                 output_tokens=usage["output_tokens"], details={"inference_geo": BEDROCK_REGIONAL})  # fmt: skip
    assert gate.spent_micro == Pricer().price(reply).cost_micro == Pricer().price(bill).cost_micro > 0


class _SetsCookies(http.server.BaseHTTPRequestHandler):
    cookies: ClassVar[list[str | None]] = []

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).cookies.append(self.headers.get("Cookie"))
        data = b'{"input_tokens": 3}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Set-Cookie", "__cf_bm=from-the-upstream; Path=/; HttpOnly")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_the_proxy_keeps_no_cookie_between_the_agents_requests():
    """A request goes on as the agent sent it: a cookie the provider set on an earlier reply is the agent's to
    keep or not (Claude Code keeps none), never added by the proxy (it was, for a named host, before)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SetsCookies)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _SetsCookies.cookies = []
    upstream = f"http://localhost:{server.server_address[1]}"  # a name: aiohttp's jar keeps no cookie of an IP
    try:
        with MeteringProxy(Gate(Pricer(), cap_micro=None), {"up": upstream}, dialects={"up": "anthropic"}) as proxy:
            url = f"{proxy.base_url('up')}/v1/messages/count_tokens"
            for _ in range(2):
                reply = httpx.post(url, json={"model": "m", "messages": []})
                assert reply.status_code == 200 and "__cf_bm" in reply.headers["set-cookie"]  # the agent sees it
            assert httpx.post(url, json={}, headers={"Cookie": "mine=1"}).status_code == 200
    finally:
        server.shutdown()
    assert _SetsCookies.cookies == [None, None, "mine=1"]


def test_gemini_on_vertex_goes_to_the_host_of_its_location_with_the_version_in_the_path(monkeypatch):
    """A Gemini-on-Vertex mount with no base URL of the user's: a request goes on to its location's host (express
    mode: the global one), the API version staying in the path; a key in the URL moves to the header."""
    from capguard.metering.proxy import server
    from capguard.metering.proxy.dialects import VERTEX_BY_LOCATION, VERTEX_GEMINI, vertex_host
    from tests.fakes.fake_gemini import FakeGemini, chat_script

    fake, hosts = FakeGemini(chat_script()), []

    def host_of(location: str) -> str | None:
        real = vertex_host(location)
        hosts.append(real)
        return None if real is None else fake.base_url

    monkeypatch.setattr(server, "vertex_host", host_of)
    events: list = []
    gate = Gate(Pricer(), cap_micro=1_000_000, on_event=events.append)
    with fake, MeteringProxy(gate, {"v": VERTEX_BY_LOCATION}, dialects={"v": VERTEX_GEMINI}) as proxy:
        body = {"contents": [{"role": "user", "parts": [{"text": "hello"}]}]}
        tails = [
            "v1beta1/publishers/google/models/gemini-2.5-flash:generateContent?key=AIza-in-the-url",
            "v1beta1/projects/p/locations/us-central1/publishers/google/models/gemini-2.5-flash:generateContent",
        ]
        for tail in tails:
            reply = httpx.post(f"{proxy.base_url('v')}/{tail}", json=body, headers={"x-goog-api-key": "AIza-k"})
            assert reply.status_code == 200, reply.text
    assert hosts == ["https://aiplatform.googleapis.com", "https://us-central1-aiplatform.googleapis.com"]
    served = fake.billed()
    assert [r["vertex_location"] for r in served] == ["global", "us-central1"]
    assert all(r["key_header"] and "key=" not in r["query"] for r in served)
    assert [e.details["charged"] for e in events if isinstance(e, Reply)] == ["usage", "usage"]
