"""The metering proxy on 127.0.0.1: forwards an agent's model requests to the provider with a per-run secret in the
path, holds each request's worst case before it goes, streams the reply back as it arrives, settles what it cost.

aiohttp (server and client in one maintained library, streaming both ways without buffering; see the commit).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import secrets
import threading
import urllib.request
from collections.abc import Mapping
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import msgspec
from aiohttp import web
from yarl import URL

from capguard.core import sanitize
from capguard.metering.proxy import eventstream, sse
from capguard.metering.proxy.aws_signing import SIGNING_HEADERS, AwsSigner, SigningUnavailable
from capguard.metering.proxy.dialects import (
    ANTHROPIC,
    BEDROCK,
    CHAT,
    CODE_ASSIST,
    CODE_ASSIST_MODELS,
    CONVERSE,
    GEMINI,
    MANTLE,
    VERTEX,
    VERTEX_BY_LOCATION,
    VERTEX_GEMINI,
    Route,
    count_tail,
    error_body,
    gemini_key_to_header,
    route,
    vertex_base,
    vertex_host,
    with_stream_usage,
)
from capguard.metering.proxy.gate import Admission, Count, Gate, Refused
from capguard.metering.proxy.task_budgets import with_beta
from capguard.metering.proxy.usage import Tracker, code_assist_reply, from_body, is_usage_chunk

log = logging.getLogger(__name__)

# Headers that belong to one hop (RFC 9110 7.6.1), or that aiohttp sets itself from the body it sends.
_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "host",
     "content-length", "accept-encoding", "proxy-authorization", "proxy-authenticate"}
)  # fmt: skip
_decode = msgspec.json.decode  # JSON as json.loads reads it (ValueError, RecursionError), 2-3x faster
_MAX_BODY = 64 * 1024 * 1024  # a request or a whole (non-streamed) reply larger than this is refused
# Asking the provider to count a prompt (only when the bytes' bound would lower or refuse a request): an answer
# later than this, or larger, is no answer, and the bytes' bound stays (the agent waits no longer than this).
COUNT_TIMEOUT_S = 3.0
_MAX_COUNT_REPLY = 64 * 1024
# In place of the secret in a path: the secret comes in the mount's header (an agent whose base URL is on its
# command line, which every user of the machine can read). Never a secret itself (those are 32 characters).
HEADER_SLOT = "h"
_SWAP = "capguard_swap"  # on a request: (header, value upstream) of the secret it came in
# Bedrock's service tier (ANTHROPIC_BEDROCK_SERVICE_TIER): the standard tier is priced, flex costs less, priority
# and reserved capacity cost more or otherwise
_BEDROCK_TIER = "X-Amzn-Bedrock-Service-Tier"
_EVENT_STREAM = "application/vnd.amazon.eventstream"
_BEDROCK_GUARDRAIL = "X-Amzn-Bedrock-GuardrailIdentifier"
_BEDROCK_TIERS_PRICED = ("", "default", "standard", "flex")


class MeteringProxy:
    """One proxy for a run. `upstreams` maps a mount name to the provider base URL it stands for: the agent is
    given `base_url(name)` wherever it would use that base URL (e.g. ANTHROPIC_BASE_URL). `dialects` names the
    error format of each mount's refusals (the Messages API's or OpenAI's)."""

    def __init__(
        self,
        gate: Gate,
        upstreams: dict[str, str],
        *,
        dialects: dict[str, str] | None = None,
        secret_headers: dict[str, tuple[str, str | None]] | None = None,
        providers: dict[str, str] | None = None,
        signers: dict[str, AwsSigner] | None = None,
        host: str = "127.0.0.1",
        secret: str | None = None,
        fast_loop: bool = True,
        count_timeout: float = COUNT_TIMEOUT_S,
    ) -> None:
        if not upstreams:
            raise ValueError("the proxy needs at least one upstream")
        self.gate = gate
        self._upstreams = {name: url.rstrip("/") for name, url in upstreams.items()}
        # the user's HTTP(S)_PROXY for each upstream, as the agent would have gone
        self._via = {name: _via(env_proxy(url)) for name, url in self._upstreams.items() if url != VERTEX_BY_LOCATION}
        self._dialects = dialects or {}
        # mount -> (the header that may carry the secret, the value sent upstream in its place; None: dropped)
        self._secret_headers = secret_headers or {}
        # mount -> the provider whose prices apply (an OpenAI-compatible API that is not OpenAI's)
        self._providers = providers or {}
        # mount -> its SigV4 signer: the agent sends no signature (one for the proxy's host would be refused)
        self._signers = signers or {}
        self._host = host
        self._secret = secret or secrets.token_urlsafe(24)
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._fast_loop = fast_loop  # start() runs uvloop when it is installed (bench/RESULTS.md section 7)
        self._count_timeout = aiohttp.ClientTimeout(total=count_timeout)
        self._settled: asyncio.Event | None = None  # set (and replaced) each time a metered call ends

    def base_url(self, mount: str) -> str:
        """What the agent uses as that provider's base URL (it holds the secret: pass it in the environment)."""
        if mount not in self._upstreams:
            raise KeyError(mount)
        return f"http://{self._host}:{self.port}/{self._secret}/{mount}"

    def header_url(self, mount: str) -> str:
        """The mount's URL without the secret, for an agent that sends the secret in the mount's header."""
        if mount not in self._secret_headers:
            raise KeyError(mount)
        return f"http://{self._host}:{self.port}/{HEADER_SLOT}/{mount}"

    @property
    def secret(self) -> str:
        """The run's secret, for the agent's environment only (an agent that sends it in a header)."""
        return self._secret

    # ---- lifecycle: in a running event loop, or on a thread of its own
    async def open(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=30),  # a long reply may be silent for minutes
            auto_decompress=False,
            # a request goes on as the agent sent it: no cookie of an earlier reply is added (the agent keeps its own)
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        app = web.Application(client_max_size=_MAX_BODY)
        app.router.add_route("*", "/{secret}/{mount}/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)  # the path holds the secret
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # port 0: the one bound

    async def close(self) -> None:
        """Stop listening (the agent gets connection refused from now on) and cut the replies in flight."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    def start(self) -> MeteringProxy:
        """Serve on a thread of its own; returns once the port is bound."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = self._loop = _new_loop(self._fast_loop)
            try:
                loop.run_until_complete(self.open())
            except BaseException as err:  # reported to start()'s caller
                failure.append(err)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.close())
            loop.close()

        self._thread = threading.Thread(target=run, name="capguard-proxy", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            raise failure[0]
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
        self._thread = None

    @property
    def alive(self) -> bool:
        """Serving on its thread (False once stopped, or if its loop died: the agent then gets connection refused)."""
        return self._thread is not None and self._thread.is_alive() and self._runner is not None

    def __enter__(self) -> MeteringProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- one request
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        mount = request.match_info["mount"]
        presented, swap = request.match_info["secret"], self._secret_headers.get(mount)
        if swap is not None:
            request[_SWAP] = swap  # never forwarded, however the secret came
            if presented == HEADER_SLOT:
                presented = request.headers.get(swap[0], "")
                if swap[0].lower() == "authorization":  # the secret as the API key the agent sends (Bearer)
                    presented = presented.removeprefix("Bearer ")
        if not hmac.compare_digest(presented.encode(), self._secret.encode()):
            return web.Response(status=404, text="not found")
        if mount not in self._upstreams:
            return web.Response(status=404, text="not found")
        style = self._dialects.get(mount, ANTHROPIC)
        if request.headers.get("Upgrade", "").lower() == "websocket":  # Codex tries one first; 426: it takes HTTP
            return web.Response(status=426, text="capguard's metering proxy meters HTTP requests only")
        tail = request.match_info["tail"]
        where = route(request.method, tail, style)
        if where.why:
            return _error(style, 403, where.why, "permission_error")
        tier = request.headers.get(_BEDROCK_TIER, "").strip().lower()
        if style in (MANTLE, BEDROCK) and tier not in _BEDROCK_TIERS_PRICED:  # Bedrock bills priority higher
            return _error(style, 400, f"capguard cannot price Bedrock's {tier[:40]!r} service tier")
        if style in (MANTLE, BEDROCK) and request.headers.get(_BEDROCK_GUARDRAIL):  # billed by text unit, apart
            return _error(style, 400, "capguard cannot price Bedrock Guardrails (billed apart from the tokens)")
        base, via = self._upstream(mount, where)
        if base is None:
            return _error(style, 400, f"capguard: {where.location!r} is no Vertex AI location")
        raw = await request.read()
        signer = self._signers.get(mount)
        query, headers = request.query_string, _headers(request, signed=signer is not None)
        if style in (GEMINI, VERTEX_GEMINI):  # a key in the URL would be in any error that shows it: to a header
            query, headers = gemini_key_to_header(query, headers)
        url = f"{base}/{tail}" + (f"?{query}" if query else "")
        signing = None
        if signer is not None:
            try:
                signing = signer, await _credentials(signer)
            except SigningUnavailable as err:
                return _error(style, 403, f"capguard could not sign this request for AWS: {err}", "permission_error")
        if where.free:
            return await self._forward_free(request, url, raw, headers, via, signing)
        dialect = where.dialect or style
        try:
            body = _decode(raw)
            if not isinstance(body, dict):
                raise ValueError("not an object")
        except (ValueError, RecursionError):
            return _error(dialect, 400, "capguard: the request body is not a JSON object")
        wrapper: dict[str, Any] | None = None
        if style == CODE_ASSIST:  # the Gemini request inside, the model beside it
            wrapper = body
            inner, model = body.get("request"), body.get("model")
            if not isinstance(inner, dict) or not isinstance(model, str) or not model:
                return _error(style, 400, "capguard: a Code Assist request needs its model and its request")
            body = inner
            where = replace(where, model=CODE_ASSIST_MODELS.get(model, model))
        refuse_as = style if style == CODE_ASSIST else dialect
        # Chat Completions is counted by OpenAI's Responses count: only where OpenAI's prices apply (another
        # provider's OpenAI-compatible API has no such endpoint, or one of its own that counts another tokenizer)
        count_at = None if dialect == CHAT and mount in self._providers else count_tail(dialect, tail)
        count_url = None if count_at is None else f"{base}/{count_at}" + (f"?{query}" if query else "")
        admission = await self._admission(
            dialect, body, where, count_url, headers, via, self._providers.get(mount), signing
        )
        while isinstance(admission, Refused) and admission.deferred:  # calls in flight hold the rest: wait for one
            await self._one_settled()
            if request.transport is None or request.transport.is_closing():
                return web.Response(status=499)  # the agent gave up waiting: send nothing it would not read
            if signer is not None:  # it may have waited long: credentials that expired meanwhile are refreshed
                try:
                    signing = signer, await _credentials(signer)
                except SigningUnavailable as err:
                    why = f"capguard could not sign this request for AWS: {err}"
                    return _error(style, 403, why, "permission_error")
            admission = await self._admission(
                dialect, body, where, count_url, headers, via, self._providers.get(mount), signing
            )
        if isinstance(admission, Refused):  # Google's API says 429 RESOURCE_EXHAUSTED for a spent budget
            return _error(refuse_as, 429 if dialect == GEMINI and admission.at_cap else 400, admission.why)
        strip = False
        sent = admission.body
        if dialect == CHAT and admission.ask.stream:
            sent, strip = with_stream_usage(sent)
        outer = sent if wrapper is None else {**wrapper, "request": sent}
        data = raw if sent is body else msgspec.json.encode(outer)
        try:
            return await self._forward_metered(
                request, url, data, admission, strip, headers, via, signing, unwrap=wrapper is not None
            )
        finally:  # settled or released: a request waiting for room asks again
            if self._settled is not None:
                self._settled.set()
                self._settled = None

    def _upstream(self, mount: str, where: Route) -> tuple[str | None, dict[str, Any]]:
        """The base URL a request goes on to, and aiohttp's arguments to reach it through the user's proxy.
        A Vertex mount without a base URL of the user's: the host of the path's location (None: no location)."""
        base = self._upstreams[mount]
        if base != VERTEX_BY_LOCATION:
            return base, self._via[mount]
        # Claude's SDK puts the API version in the base URL, Google's in the path
        found = (vertex_base if self._dialects.get(mount) == VERTEX else vertex_host)(where.location or "")
        if found is None:
            return None, {}
        if found not in self._via:  # a handful of locations at most, each a Google host
            self._via[found] = _via(env_proxy(found))
        return found, self._via[found]

    async def _one_settled(self) -> None:
        if self._settled is None:
            self._settled = asyncio.Event()
        await self._settled.wait()

    async def _admission(
        self,
        dialect: str,
        body: dict[str, Any],
        where: Route,
        count_url: str | None,
        headers: dict[str, str],
        via: dict[str, Any],
        provider: str | None = None,
        signing: _Signing | None = None,
    ) -> Admission | Refused:
        """The gate's answer, after asking the provider to count the prompt when the gate wants a count."""
        admission = self.gate.admit(
            dialect,
            body,
            model=where.model,
            stream=where.stream,
            may_count=count_url is not None,
            defer=True,
            provider=provider,
            location=where.location,
            platform=where.platform,
        )
        if isinstance(admission, Count):
            assert count_url is not None
            answer = await self._count(count_url, headers, admission, via, signing)
            admission = self.gate.admit_counted(admission, answer, defer=True)
        return admission

    async def _forward_free(
        self,
        request: web.Request,
        url: str,
        raw: bytes,
        headers: dict[str, str],
        via: dict[str, Any],
        signing: _Signing | None = None,
    ) -> web.StreamResponse:
        assert self._session is not None
        target, headers = _signed(signing, request.method, url, headers, raw)
        try:
            async with self._session.request(request.method, target, data=raw, headers=headers, **via) as upstream:
                body = await upstream.read()
                return web.Response(status=upstream.status, body=body, headers=_reply_headers(upstream))
        except aiohttp.ClientError as err:
            return _error(self._dialects.get(request.match_info["mount"], ANTHROPIC), 502, _unreachable(err))

    async def _count(
        self, url: str, headers: dict[str, str], count: Count, via: dict[str, Any], signing: _Signing | None = None
    ) -> Any:
        """The provider's answer to counting the prompt (parsed JSON), or None: any failure leaves the bytes'
        bound. The agent's headers go with it (its key, anthropic-version and -beta): passed on, never logged."""
        assert self._session is not None
        data = msgspec.json.encode(count.body)
        target, headers = _signed(signing, "POST", url, headers, data)
        try:
            async with self._session.post(
                target, data=data, headers=headers, timeout=self._count_timeout, **via
            ) as upstream:
                if upstream.status != 200:
                    return None
                body = b""
                async for chunk in upstream.content.iter_any():
                    body += chunk
                    if len(body) > _MAX_COUNT_REPLY:
                        return None
                return _json(body)
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
            return None

    async def _forward_metered(
        self,
        request: web.Request,
        url: str,
        data: bytes,
        admission: Admission,
        strip: bool,
        headers: dict[str, str],
        via: dict[str, Any],
        signing: _Signing | None = None,
        *,
        unwrap: bool = False,
    ) -> web.StreamResponse:
        assert self._session is not None
        gate, seen = self.gate, None
        try:
            if admission.task is not None:  # the task budget the proxy added needs its beta
                beta = next((k for k in headers if k.lower() == "anthropic-beta"), "anthropic-beta")
                headers[beta] = with_beta(headers.get(beta))
            target, headers = _signed(signing, "POST", url, headers, data)  # the bytes sent, as sent
            upstream = await self._session.post(target, data=data, headers=headers, **via)
        except aiohttp.ClientConnectorError as err:  # never reached the server: nothing billed
            gate.release(admission)
            return _error(admission.dialect, 502, _unreachable(err), "api_error")
        except BaseException:  # sent, then lost: the server may have billed it
            gate.settle(admission, None)
            raise
        try:
            kind = upstream.headers.get("Content-Type", "")
            if upstream.status == 200 and _EVENT_STREAM in kind:  # Bedrock's: binary messages, not SSE
                return await self._stream(request, upstream, admission, strip, framed=True)
            if upstream.status == 200 and "text/event-stream" in kind:
                return await self._stream(request, upstream, admission, strip, unwrap=unwrap)
            body = await upstream.content.read()  # hop-local: the server's own limit bounds a whole reply
            seen = from_body(admission.dialect, code_assist_reply(_json(body)) if unwrap else _json(body))
            seen.response_id = seen.response_id or _request_id(admission, upstream)
            if upstream.status != 200 and not seen.complete:
                gate.release(admission)  # an error without usage: the server billed nothing
            else:
                gate.settle(admission, seen)
            return web.Response(status=upstream.status, body=body, headers=_reply_headers(upstream))
        except BaseException:
            gate.settle(admission, seen)  # no-op once settled
            raise
        finally:
            upstream.release()

    async def _stream(
        self,
        request: web.Request,
        upstream: aiohttp.ClientResponse,
        admission: Admission,
        strip: bool,
        *,
        framed: bool = False,
        unwrap: bool = False,
    ) -> web.StreamResponse:
        reply = web.StreamResponse(status=upstream.status, headers=_reply_headers(upstream))
        tracker, splitter = Tracker(admission.dialect), sse.EventSplitter()
        messages = eventstream.MessageSplitter()
        tracker.seen.response_id = _request_id(admission, upstream)
        # Bedrock's InvokeModel wraps each Messages event in a chunk; Converse sends its own events
        read_event = eventstream.converse_event if admission.dialect == CONVERSE else eventstream.bedrock_event
        try:
            await reply.prepare(request)
            async for chunk in upstream.content.iter_any():
                if not strip:
                    await reply.write(chunk)  # byte for byte, as it came; read after, off the time to first byte
                if framed:  # a message that cannot be read ends the reading: no final usage, charged by the bound
                    for message in messages.feed(chunk):
                        if eventstream.is_exception(message):
                            tracker.seen.failed = True
                        elif (event := read_event(message)) is not None:
                            tracker.see(event)
                    continue
                keep = []
                for raw in splitter.feed(chunk):
                    parsed = sse.json_data(sse.parse(raw)[1])
                    if unwrap:  # Code Assist's event: the Gemini reply inside
                        parsed = code_assist_reply(parsed)
                    if parsed is not None:
                        tracker.see(parsed)
                        if strip and is_usage_chunk(parsed):
                            continue  # the client did not ask for it: it never sees it
                    keep.append(raw)
                if strip and keep:
                    await reply.write(b"".join(keep))
            if strip and (rest := splitter.rest()):
                await reply.write(rest)
            self.gate.settle(admission, tracker.seen)  # before the agent sees the end, as the server billed it
            await reply.write_eof()
        except (aiohttp.ClientError, ConnectionError, asyncio.TimeoutError):
            if request.transport is not None:
                request.transport.abort()  # the client sees a broken stream, as it would from the server
        finally:
            upstream.close()  # the agent went away or the server cut: stop generating what nobody reads
            self.gate.settle(admission, tracker.seen)  # cut short: charged by the bound (no-op once settled)
        return reply


def _new_loop(fast: bool) -> asyncio.AbstractEventLoop:
    """uvloop's event loop where it is installed (`pip install 'capguard-cli[fast]'`; Linux, macOS): 25-30% less
    CPU per request in most paired runs of bench/proxy_ttfb.py; asyncio's otherwise."""
    if fast:
        try:
            import uvloop  # type: ignore[import-not-found, unused-ignore]  # the optional [fast] extra
        except ImportError:
            pass
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


_Signing = tuple[AwsSigner, Any]  # a signed mount's signer and the credentials of this request


async def _credentials(signer: AwsSigner) -> Any:
    """The signer's credentials for a request, refreshed when due: on a worker thread when a refresh may call AWS
    (SSO, a role), on the loop for keys given as they are. SigningUnavailable: none can be had."""
    if signer.may_refresh:
        return await asyncio.get_running_loop().run_in_executor(None, signer.credentials)
    return signer.credentials()


def _signed(
    signing: _Signing | None, method: str, url: str, headers: dict[str, str], data: bytes
) -> tuple[str | URL, dict[str, str]]:
    """Where a request goes and its headers: unchanged, or signed for AWS over the URL exactly as aiohttp sends
    it (yarl's encoding of the path is what the host receives and checks the signature against)."""
    if signing is None:
        return url, headers
    signer, credentials = signing
    target = URL(url)
    return target, signer.sign(credentials, method, str(target), headers, data)


def _headers(request: web.Request, *, signed: bool = False) -> dict[str, str]:
    """The agent's headers (its API key included: passed on, never logged), minus those of this hop, and minus
    any signature of the agent's when the proxy signs."""
    drop = _HOP | SIGNING_HEADERS if signed else _HOP
    out = {k: v for k, v in request.headers.items() if k.lower() not in drop}
    out["Accept-Encoding"] = "identity"  # the proxy reads the usage: no compression on the local hop
    swap = request.get(_SWAP)
    if swap is not None:  # the run's secret never goes upstream: the header goes, or gets the user's own value
        out = {k: v for k, v in out.items() if k.lower() != swap[0].lower()}
        if swap[1]:
            out[swap[0]] = swap[1]
    return out


def env_proxy(url: str, env: Mapping[str, str] | None = None) -> str | None:
    """The proxy the user's environment names for `url` (https_proxy / HTTPS_PROXY for an https URL, then
    all_proxy), unless no_proxy exempts its host; never one for a loopback upstream."""
    env = os.environ if env is None else env
    parts = urlsplit(url)
    host = parts.hostname or ""
    if host in ("127.0.0.1", "localhost", "::1"):
        return None
    found: dict[str, str] = {}
    for key in ("no", parts.scheme, "all"):
        value = env.get(f"{key}_proxy") or env.get(f"{key.upper()}_PROXY")
        if value:
            found[key] = value
    # urllib's own no_proxy rules (suffixes, ports, "*"); typeshed does not list the function
    if "no" in found and urllib.request.proxy_bypass_environment(host, found):  # type: ignore[attr-defined]
        return None
    return found.get(parts.scheme) or found.get("all")


def _via(proxy: str | None) -> dict[str, Any]:
    """aiohttp's arguments for going through `proxy` (its credentials, if any, as proxy auth)."""
    if proxy is None:
        return {}
    auth = aiohttp.BasicAuth.from_url(URL(proxy))
    bare = str(URL(proxy).with_user(None)) if auth is not None else proxy
    return {"proxy": bare, "proxy_auth": auth} if auth is not None else {"proxy": bare}


def _request_id(admission: Admission, upstream: aiohttp.ClientResponse) -> str | None:
    """A Converse reply names no id of its own: Bedrock's request id (a header) stands for it in the ledger."""
    if admission.dialect != CONVERSE:
        return None
    return sanitize.name(upstream.headers.get("x-amzn-RequestId"))


def _reply_headers(upstream: aiohttp.ClientResponse) -> dict[str, str]:
    return {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP}


def _json(body: bytes) -> Any:
    try:
        return _decode(body)
    except (ValueError, RecursionError):
        return None


def _error(dialect: str, status: int, message: str, kind: str = "invalid_request_error") -> web.Response:
    body = error_body(dialect, message, kind, status)
    return web.Response(status=status, body=body, content_type="application/json")


def _unreachable(err: BaseException) -> str:
    return f"capguard's metering proxy could not reach the provider: {type(err).__name__}"
