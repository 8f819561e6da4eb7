"""The metering proxy's secret in a header (for an agent whose base URL is on its command line, which every user of
the machine can read): the URL holds no secret, the header must hold it (compared in constant time), and it never
goes upstream, where the header gets the user's own value back or is dropped. A WebSocket upgrade gets 426, which
Codex takes as "use HTTP"."""

from __future__ import annotations

import httpx
import pytest

from capguard.core.pricing import Pricer
from capguard.metering.proxy import Gate, MeteringProxy
from capguard.metering.proxy.server import HEADER_SLOT
from tests.fakes import fake_responses

BODY = {"model": "gpt-5", "input": "hi", "max_output_tokens": 2000}


@pytest.fixture
def proxy():
    with fake_responses.FakeResponses(fake_responses.Script([fake_responses.say("hello")])) as fake:
        gate = Gate(Pricer(), cap_micro=None)
        headers = {"own": ("OpenAI-Project", "proj_users_own"), "bare": ("X-Capguard-Key", None)}
        up = {"own": fake.base_url, "bare": fake.base_url, "path": fake.base_url}
        with MeteringProxy(gate, up, dialects=dict.fromkeys(up, "responses"), secret_headers=headers) as running:
            running.fake = fake
            yield running


def post(url: str, **headers: str) -> httpx.Response:
    return httpx.post(url + "/responses", json=BODY, headers=headers, timeout=30)


def test_the_url_holds_no_secret_and_the_header_must(proxy):
    url = proxy.header_url("bare")
    assert proxy.secret not in url and f"/{HEADER_SLOT}/bare" in url
    assert post(url).status_code == 404  # no header: as an unknown path
    assert post(url, **{"X-Capguard-Key": proxy.secret[:-1] + "x"}).status_code == 404
    assert post(url, **{"OpenAI-Project": proxy.secret}).status_code == 404  # another mount's header
    ok = post(url, **{"X-Capguard-Key": proxy.secret})
    assert ok.status_code == 200 and ok.json()["output"][0]["content"][0]["text"] == "hello"
    [sent] = proxy.fake.requests
    assert "X-Capguard-Key" not in sent["headers"] and proxy.secret not in str(sent["headers"])


def test_the_users_own_header_value_goes_upstream_in_place_of_the_secret(proxy):
    assert post(proxy.header_url("own"), **{"OpenAI-Project": proxy.secret}).status_code == 200
    assert post(proxy.base_url("own"), **{"OpenAI-Project": "anything"}).status_code == 200  # the path's secret
    assert [r["headers"]["OpenAI-Project"] for r in proxy.fake.requests] == ["proj_users_own"] * 2


def test_a_mount_without_a_header_takes_no_secret_from_one(proxy):
    with pytest.raises(KeyError):
        proxy.header_url("path")
    assert (
        post(f"http://127.0.0.1:{proxy.port}/{HEADER_SLOT}/path", **{"X-Capguard-Key": proxy.secret}).status_code == 404
    )
    assert post(proxy.base_url("path")).status_code == 200


def test_a_websocket_upgrade_gets_426_and_never_reaches_the_server(proxy):
    upgrade = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "X-Capguard-Key": proxy.secret}  # fmt: skip
    done = httpx.get(proxy.header_url("bare") + "/responses", headers=upgrade, timeout=30)
    assert done.status_code == 426
    unauthorized = httpx.get(proxy.header_url("bare") + "/responses", headers={**upgrade, "X-Capguard-Key": "x"})
    assert unauthorized.status_code == 404
    assert not proxy.fake.requests


def test_the_secret_as_the_agents_bearer_key_is_checked_and_the_users_own_key_goes_on():
    """Codex's built-in Bedrock providers take no header of ours: the secret is the API key Codex sends
    (Authorization: Bearer). A wrong or missing key is an unknown path; upstream the user's own key goes instead."""
    script = fake_responses.Script([fake_responses.say("hello")], bearer="users-own-bedrock-key")
    with fake_responses.FakeResponses(script) as fake:
        gate = Gate(Pricer(), cap_micro=None)
        headers = {"bedrock": ("Authorization", "Bearer users-own-bedrock-key")}
        with MeteringProxy(gate, {"bedrock": fake.base_url}, dialects={"bedrock": "responses"},
                           secret_headers=headers) as proxy:  # fmt: skip
            url = proxy.header_url("bedrock")
            assert post(url).status_code == 404
            assert post(url, Authorization=f"Bearer {proxy.secret[:-1]}x").status_code == 404
            assert post(url, Authorization="Bearer users-own-bedrock-key").status_code == 404  # not the secret
            assert post(url, Authorization=f"Bearer {proxy.secret}").status_code == 200
        (sent,) = fake.requests
        assert sent["headers"]["Authorization"] == "Bearer users-own-bedrock-key" and not fake.refused_signatures
        assert proxy.secret not in str(sent["headers"])
