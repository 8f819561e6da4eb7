"""The metering proxy signing for AWS (SigV4) in front of a fake Bedrock that bills only what it can verify
(tests/fakes/sigv4.py, apart from botocore): the path as it goes on the wire (a versioned id's colon, raw or
encoded), the streamed and whole replies, Bedrock's CountTokens, and credentials that fail mid-run (refused,
nothing sent)."""

from __future__ import annotations

import json
from dataclasses import replace

import httpx
import pytest

from capguard.core.pricing import Pricer
from capguard.metering.proxy import Gate, MeteringProxy
from capguard.metering.proxy.aws_signing import AwsSigner, AwsSigning, SigningUnavailable
from capguard.metering.proxy.dialects import BEDROCK
from tests.fakes import sigv4
from tests.fakes.fake_anthropic import COUNT_TOKENS, FakeAnthropic, Script, Usage

ACCESS = "AKIDCAPGUARDPROXY001"
SECRET = "proxy/Secret+Key/0123456789abcdefghijklmn"
KEYS = sigv4.Keys(ACCESS, SECRET, "us-east-1", "bedrock")
BODY = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 300, "messages": [{"role": "user", "content": "hi"}]}


def loaded() -> AwsSigner:
    signer = AwsSigner(
        AwsSigning("bedrock", "us-east-1", {"AWS_ACCESS_KEY_ID": ACCESS, "AWS_SECRET_ACCESS_KEY": SECRET})
    )
    signer.load()
    return signer


def proxy_for(fake: FakeAnthropic, signer: AwsSigner, events: list) -> MeteringProxy:
    gate = Gate(Pricer(), cap_micro=5_000_000, on_event=events.append, providers={BEDROCK: "anthropic"})
    return MeteringProxy(
        gate, {"bedrock": fake.base_url}, dialects={"bedrock": BEDROCK}, providers={"bedrock": "anthropic"},
        signers={"bedrock": signer},
    )  # fmt: skip


@pytest.mark.parametrize(
    ("model_path", "verb"),
    [
        ("anthropic.claude-3-5-haiku-20241022-v1:0", "invoke"),
        ("anthropic.claude-3-5-haiku-20241022-v1%3A0", "invoke"),  # as the AWS SDKs send it
        ("us.anthropic.claude-sonnet-4-5-20250929-v1%3A0", "invoke-with-response-stream"),
    ],
)
def test_each_request_is_signed_for_the_host_it_goes_to_and_billed(model_path, verb):
    events: list = []
    script = Script(usage=Usage(input_tokens=1_000, output_tokens=40, cache_write_5m=0, cache_read=0), sigv4=KEYS)
    with FakeAnthropic(script) as fake, proxy_for(fake, loaded(), events) as proxy:
        url = f"{proxy.base_url('bedrock')}/model/{model_path}/{verb}"
        # whatever the agent sent as its own signature (one for the proxy's host) is not what goes on
        agents = {"Authorization": "AWS4-HMAC-SHA256 Credential=AKIDAGENT/x", "Content-Type": "application/json"}
        reply = httpx.post(url, content=json.dumps(BODY), headers=agents, timeout=30)
    assert reply.status_code == 200, reply.text
    assert fake.refused_signatures == []
    (served,) = [r for r in fake.requests if r.get("usage")]
    assert served["headers"]["authorization"].startswith("AWS4-HMAC")
    (settled,) = [e for e in events if hasattr(e, "cost_micro") or hasattr(e, "input_tokens")]
    assert settled.input_tokens == 1_000 and settled.details["charged"] == "usage"


def test_bedrocks_count_tokens_is_signed_too():
    """A prompt whose bytes' bound would lower the output limit is counted first (Bedrock's CountTokens, free):
    that request is signed as the call is."""
    events: list = []
    script = replace(Script(bill_prompt=True, honor_max_tokens=True), sigv4=KEYS)
    big = {**BODY, "max_tokens": 4_000, "messages": [{"role": "user", "content": "word " * 20_000}]}
    with FakeAnthropic(script) as fake:
        gate = Gate(Pricer(), cap_micro=150_000, on_event=events.append, providers={BEDROCK: "anthropic"})
        with MeteringProxy(gate, {"bedrock": fake.base_url}, dialects={"bedrock": BEDROCK},
                           providers={"bedrock": "anthropic"}, signers={"bedrock": loaded()}) as proxy:  # fmt: skip
            url = f"{proxy.base_url('bedrock')}/model/us.anthropic.claude-sonnet-4-5-20250929-v1:0/invoke"
            reply = httpx.post(url, content=json.dumps(big), headers={"Content-Type": "application/json"}, timeout=30)
    assert fake.refused_signatures == []
    assert [r["kind"] for r in fake.requests if r["kind"] == COUNT_TOKENS] == [COUNT_TOKENS]
    assert reply.status_code == 200, reply.text


def test_refreshable_credentials_are_fetched_off_the_loop_and_signed_with(tmp_path):
    """A profile's credential_process (temporary credentials, refreshed by botocore): the proxy fetches them on a
    worker thread, each request signed with their token."""
    from tests.unit.test_aws_signing import SECRET as UNIT_SECRET
    from tests.unit.test_aws_signing import TOKEN, credential_process

    keys = sigv4.Keys(ACCESS, UNIT_SECRET, "us-east-1", "bedrock", TOKEN)
    signer = AwsSigner(AwsSigning("bedrock", "us-east-1", credential_process(tmp_path, ACCESS)))
    signer.load()
    assert signer.may_refresh
    events: list = []
    with FakeAnthropic(Script(sigv4=keys)) as fake, proxy_for(fake, signer, events) as proxy:
        url = f"{proxy.base_url('bedrock')}/model/us.anthropic.claude-opus-5-5/invoke"
        for _ in range(3):
            reply = httpx.post(url, content=json.dumps(BODY), headers={"Content-Type": "application/json"}, timeout=30)
            assert reply.status_code == 200, reply.text
    assert fake.refused_signatures == [] and len([r for r in fake.requests if r.get("usage")]) == 3


class _Expired(AwsSigner):
    def credentials(self):  # an SSO session that ended while the agent ran
        raise SigningUnavailable("the AWS credentials could not be refreshed: UnauthorizedSSOTokenError: expired")


def test_credentials_that_fail_mid_run_refuse_the_request_and_send_nothing():
    events: list = []
    with FakeAnthropic(Script(sigv4=KEYS)) as fake:
        signer = _Expired(AwsSigning("bedrock", "us-east-1", {}))
        with proxy_for(fake, signer, events) as proxy:
            url = f"{proxy.base_url('bedrock')}/model/us.anthropic.claude-opus-5-5/invoke"
            reply = httpx.post(url, content=json.dumps(BODY), headers={"Content-Type": "application/json"}, timeout=30)
    assert reply.status_code == 403
    assert "could not sign this request for AWS" in reply.json()["message"] and "expired" in reply.json()["message"]
    assert fake.requests == [] and events == []  # nothing sent, nothing held
    assert proxy.gate.held_micro == 0 and proxy.gate.spent_micro == 0


class _Counting(AwsSigner):
    def __init__(self, how: AwsSigning) -> None:
        super().__init__(how)
        self.fetched = 0

    def credentials(self):
        self.fetched += 1
        return super().credentials()


def test_a_request_that_waited_for_room_is_signed_with_credentials_fetched_after_the_wait():
    """Calls in flight hold the rest of the cap: a second request waits for the first to settle (deferred), maybe
    for minutes; the credentials it is signed with are fetched again after the wait (temporary ones may expire)."""
    import threading

    script = Script(usage=Usage(input_tokens=1_000, output_tokens=40, cache_write_5m=0, cache_read=0), sigv4=KEYS,
        first_byte_delay_s=1.0, count_mode="error")  # fmt: skip
    signer = _Counting(
        AwsSigning("bedrock", "us-east-1", {"AWS_ACCESS_KEY_ID": ACCESS, "AWS_SECRET_ACCESS_KEY": SECRET})
    )
    signer.load()
    with FakeAnthropic(script) as fake:
        gate = Gate(Pricer(), cap_micro=20_000, providers={BEDROCK: "anthropic"})
        with MeteringProxy(gate, {"bedrock": fake.base_url}, dialects={"bedrock": BEDROCK},
                           providers={"bedrock": "anthropic"}, signers={"bedrock": signer}) as proxy:  # fmt: skip
            url = f"{proxy.base_url('bedrock')}/model/us.anthropic.claude-opus-5-5/invoke"
            statuses: list[int] = []

            def call() -> None:
                reply = httpx.post(
                    url, content=json.dumps(BODY), headers={"Content-Type": "application/json"}, timeout=30
                )
                statuses.append(reply.status_code)

            first = threading.Thread(target=call)
            first.start()
            assert fake.wait_for(1, timeout=10)  # the first holds its worst case, in flight
            call()  # does not fit beside it: waits for it to settle, then goes
            first.join()
    assert statuses == [200, 200] and fake.refused_signatures == []
    assert signer.fetched == 3  # the first's, the second's, and the second's again after its wait
