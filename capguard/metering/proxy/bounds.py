"""A request's worst case before it is sent: an upper bound of its prompt in tokens (safe for any tokenizer, tight
when an earlier prompt of the same conversation was billed), its cost for n output tokens, a cut stream's output.

Pure apart from genai-prices' offline data (a model's context window).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import msgspec

from capguard.core.events import Reply
from capguard.core.pricing import Pricer, split_provider
from capguard.metering.proxy.chat_count import responses_count_body
from capguard.metering.proxy.compact_json import CACHE_CONTROL, encode, string_end
from capguard.metering.proxy.dialects import ANTHROPIC, BEDROCK, CHAT, CONVERSE, GEMINI, RESPONSES, VERTEX_GEMINI, Ask

# A token is at least one byte of UTF-8 text in every tokenizer in use (byte-level BPE, SentencePiece with byte
# fallback), so a prompt's JSON bytes bound its tokens; what the bytes do not show gets an allowance.
MESSAGE_OVERHEAD = 16  # role and turn markers of one message
REQUEST_OVERHEAD = 1_000  # the system prompt a provider adds (Anthropic's for tool use is ~350-700 tokens)
IMAGE_TOKENS = 3_000  # an image given by URL or file id (inline base64 bytes already exceed its tokens)
REFERENCED_DOCUMENT_TOKENS = 100_000  # a document or file given by URL or id
CUT_SLACK = 64  # tokens a server may have generated and billed that never reached the proxy
CUT_SLACK_PER_EVENT = 2
# The provider's own count of a prompt (Anthropic's count_tokens, OpenAI's input_tokens) is documented as an
# estimate that may differ from the bill "by a small amount": it is held with the margin the SDK wrapper keeps
# (capguard/budget/admission.py), and never above the bytes' bound.
COUNT_MARGIN_PERCENT = 5
COUNT_MARGIN_TOKENS = 64
COUNT_MAX_BYTES_PER_TOKEN = 64  # a count below a token per 64 bytes is no count of this prompt (a gateway's stub)
COUNT_WORTH_TOKENS = 1_000  # a bound with fewer tokens from bytes than this gains too little to wait for a count

# Body keys that do not change the prompt; every other key is part of a conversation's identity.
_NOT_PROMPT = frozenset(
    {
        "max_tokens",
        "max_completion_tokens",
        "max_output_tokens",
        "stream",
        "stream_options",
        "temperature",
        "top_p",
        "top_k",
        "metadata",
        "user",
        "store",
        "seed",
        "n",
        "stop",
        "stop_sequences",
        "prompt_cache_key",
        "safety_identifier",
        "service_tier",
        "parallel_tool_calls",
        "thinking",
        "reasoning",
        "reasoning_effort",
        "inferenceConfig",  # Converse's maxTokens, temperature, stop sequences
        "additionalModelResponseFieldPaths",  # Converse: which of the model's own fields to return
    }
)
_MEDIA = {"image", "image_url", "input_image", "document", "input_file", "file", "input_audio"}


def _dumps(value: Any) -> bytes:
    """A part of the prompt as compact UTF-8 JSON, keys in the order the agent sent them (an agent re-sends a
    message as it sent it; a reordered one only misses the tighter bound)."""
    return encode(value)


def _uncached(value: Any) -> Any:
    """`value` without its cache_control markers, a lone text block as its text: a client moves the markers to the
    newest message on each turn and sends that message as blocks then as a string (Claude Code does), which
    changes no token of the prompt, so a conversation's prefix is still recognised. For the hash only."""
    if isinstance(value, dict):
        out = {k: _uncached(v) for k, v in value.items() if k != "cache_control"}
        content = out.get("content")
        if (
            isinstance(content, list)
            and len(content) == 1
            and isinstance(content[0], dict)
            and content[0].keys() == {"type", "text"}
            and content[0]["type"] == "text"
            and isinstance(content[0]["text"], str)
        ):
            out["content"] = content[0]["text"]  # one text block is the same prompt as the text alone
        return out
    if isinstance(value, list):
        return [_uncached(v) for v in value]
    return value


# Everything a part's bytes may hold that changes how it is hashed or bounded, found in one pass: a cache marker
# (group 1); the start of a content list whose first block is exactly a type "text" and a text, in either key order
# (groups 2, 3), a lone text block if its text string is followed by the block's end (_LONE_END); a media block or
# Gemini's inline data (no group). msgspec writes compact JSON and escapes every quote in a string, so a mark starts
# inside a string only where a key ends with its name (`"a\"cache_control":`): a false alarm, which costs a rewrite
# or a walk that gives the same answer, never a miss. Matches never overlap, and none can hide another: each ends at
# a colon, or inside or at the start of a string value, where no other mark can begin.
_MARKS = re.compile(
    rb'"(?:(cache_control":)|(content":\[\{"type":"text","text":")|(content":\[\{"text":")'
    rb'|type":"(?:input_)?(?:image|document|file|audio)|inline_?[dD]ata":)'
)
_LONE_END = {2: b"}]", 3: b',"type":"text"}]'}


def _scan(dumped: bytes) -> tuple[bool, bool]:
    """(whether `_uncached` may change the part: a cache marker or a lone text block; whether it may hold media its
    bytes do not show). Most parts of a long conversation hold neither: one regex pass over their bytes."""
    rewrite = media = False
    for found in _MARKS.finditer(dumped):
        kind = found.lastindex
        if kind is None:
            media = True
        elif kind == 1:
            rewrite = True
        elif not rewrite:  # a content list's first block: lone if its text closes the block and the list
            closing = string_end(dumped, found.end())
            rewrite = dumped.startswith(_LONE_END[kind], closing + 1)
        if rewrite and media:
            break
    return rewrite, media


@functools.lru_cache(maxsize=32)
def _uncached_bytes(dumped: bytes) -> bytes:
    """`_dumps(_uncached(part))` from the part's own bytes (a JSON round trip gives the same part back): an agent
    re-sends its system prompt and tools, with their cache markers, on every call; they are rewritten once."""
    return _dumps(_uncached(msgspec.json.decode(dumped)))


class _Kept:
    """What was computed from a part's bytes, by the link before it and those bytes (first in, first out; at most
    `budget` bytes of parts, none larger than `largest`): an agent sends its whole conversation again on every call,
    so a part is read once, not on every call (a lookup hashes its bytes: 5-10 times faster than the scan and the
    chain's hash). What is kept is a function of its key alone, so nothing sent can make a later answer differ."""

    def __init__(self, budget: int, largest: int) -> None:
        self._store: dict[tuple[bytes, bytes], tuple[Any, int]] = {}
        self._size = 0
        self._budget, self._largest = budget, largest
        self._lock = threading.Lock()

    def get(self, key: tuple[bytes, bytes]) -> Any:
        found = self._store.get(key)  # one dict lookup: atomic under the GIL, no lock
        return None if found is None else found[0]

    def put(self, key: tuple[bytes, bytes], size: int, value: Any) -> None:
        if size > self._largest:
            return
        with self._lock:
            if key in self._store:
                return
            self._store[key] = (value, size)
            self._size += size
            while self._size > self._budget:  # the oldest first: a part still in use is read again, once
                self._size -= self._store.pop(next(iter(self._store)))[1]


_KEPT = _Kept(16 << 20, 1 << 20)


class Part(NamedTuple):
    """One part of a prompt (the request's head, or one message) as compact JSON, with what its bytes hold and the
    conversation's hash chain up to and with it."""

    value: Any
    dumped: bytes
    rewrite: bool  # hashed as `_uncached` (a cache marker or a lone text block)
    media: bool  # may hold media its bytes do not show
    users_own: bool  # a message the user wrote (_users_own)
    link: bytes  # sha256(the link before it + `_dumps(_uncached(value))`)

    @classmethod
    def of(cls, value: Any, before: bytes) -> Part:
        dumped = _dumps(value)
        key = (before, dumped)
        read = _KEPT.get(key)
        if read is None:
            rewrite, media = _scan(dumped)
            chain = hashlib.sha256(before)
            # serialized a second time only when its bytes say `_uncached` changes it (most parts of a Claude Code
            # conversation: no marker, no lone text block)
            chain.update(_uncached_bytes(dumped) if rewrite else dumped)
            read = (rewrite, media, _users_own(value), chain.digest())
            _KEPT.put(key, len(dumped), read)
        return cls(value, dumped, *read)

    @property
    def media_tokens(self) -> int:
        return media_allowance(self.value) if self.media else 0


@dataclass(frozen=True)
class Prompt:
    """A request serialized once, part by part, for its bound, its conversation's hash and its cache write: on a
    conversation of hundreds of kilobytes each pass over its bytes costs about a tenth of a millisecond."""

    head: Part  # every key of the body but its messages and those that change no token of the prompt
    items: list[Part]  # its messages (contents, input items), each linked to the one before (the first: the head)
    rest: bytes  # the keys in neither

    @classmethod
    def of(cls, dialect: str, body: dict[str, Any]) -> Prompt:
        key = _ITEMS_KEY.get(dialect, "messages")
        head_value = {k: v for k, v in body.items() if k not in _NOT_PROMPT and k not in _ITEM_KEYS}
        rest = {k: v for k, v in body.items() if k != key and k not in head_value}
        head = Part.of(head_value, dialect.encode() + b"\0")
        items, before = [], head.link
        for item in _items(dialect, body):
            part = Part.of(item, before)
            items.append(part)
            before = part.link
        return cls(head, items, _dumps(rest) if rest else b"")

    def marked(self) -> list[bytes]:
        """The compact JSON of the parts that may hold a cache marker: together they hold every one of the body."""
        parts = [self.head, *self.items]
        pieces = [part.dumped for part in parts if part.rewrite and CACHE_CONTROL in part.dumped]
        return [*pieces, self.rest] if CACHE_CONTROL in self.rest else pieces


_ITEMS_KEY = {RESPONSES: "input", GEMINI: "contents"}
_ITEM_KEYS = ("messages", "input", "contents")


def _items(dialect: str, body: dict[str, Any]) -> list[Any]:
    items = body.get(_ITEMS_KEY.get(dialect, "messages"))
    if isinstance(items, list):
        return items
    return [] if items is None else [items]


@dataclass(frozen=True)
class InputBound:
    """An upper bound of a request's prompt tokens, and the key its billed prompt is remembered under."""

    tokens: int
    key: bytes
    tight: bool  # an earlier billed prompt of the conversation made it tighter than the bytes alone
    from_bytes: int = 0  # of `tokens`, those bounded by bytes (all of them unless tight); a count may lower them
    counted: bool = False  # `tokens` is the provider's count of the prompt, with COUNT_MARGIN
    # the links of its prefixes that end with a user's own message: a later prompt that shares one is bounded by
    # this prompt's bill plus the bytes of what follows the shared part
    prefixes: tuple[bytes, ...] = ()


class Conversations:
    """Prompt tokens billed for earlier prompts, by a hash of everything they held; for each of their prefixes that
    ends with a user's own message, the least billed prompt that held it; and each Responses reply's prompt plus
    output (the prompt of a request that continues it by `previous_response_id`). Bounded memory."""

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._prompts: OrderedDict[bytes, int] = OrderedDict()
        self._prefixes: OrderedDict[bytes, int] = OrderedDict()
        self._responses: OrderedDict[str, int] = OrderedDict()
        self.trusted = True

    def distrust(self) -> None:
        """A call was billed more prompt than its bound: a bill remembered here was too low (a server whose usage
        does not add up). Forget every bill and remember none from now on: each prompt is held at its bytes."""
        self.trusted = False
        self._prompts.clear()
        self._prefixes.clear()
        self._responses.clear()

    def remember(
        self,
        key: bytes,
        prompt_tokens: int,
        response_id: str | None,
        output_tokens: int,
        prefixes: tuple[bytes, ...] = (),
    ) -> None:
        if not self.trusted:
            return
        _put(self._prompts, key, prompt_tokens, self._size)
        for prefix in prefixes:
            known = self._prefixes.get(prefix)
            _put(self._prefixes, prefix, prompt_tokens if known is None else min(known, prompt_tokens), self._size * 4)
        if response_id:
            _put(self._responses, response_id, prompt_tokens + output_tokens, self._size)

    def prompt(self, key: bytes) -> int | None:
        return self._prompts.get(key)

    def prefix(self, link: bytes) -> int | None:
        """The least prompt billed that began with what `link` chains (a prefix ending with a user's message)."""
        return self._prefixes.get(link)

    def response(self, response_id: str) -> int | None:
        return self._responses.get(response_id)


def _put(store: OrderedDict[Any, int], key: Any, value: int, size: int) -> None:
    store[key] = value
    store.move_to_end(key)
    while len(store) > size:
        store.popitem(last=False)


def input_bound(dialect: str, body: dict[str, Any], known: Conversations, prompt: Prompt | None = None) -> InputBound:
    """The prompt's tokens at most. ValueError when it continues a stored reply capguard never saw (its size is
    unknown); a model's context window would bound it, but not for every provider's long-context options.

    `prompt`: the body already serialized (`Prompt.of`); each part's bytes are both its bound and its link in the
    conversation's hash chain. This runs before the request is forwarded, on conversations of hundreds of kilobytes."""
    prompt = prompt or Prompt.of(dialect, body)
    head = prompt.head
    link = head.link
    full = len(head.dumped) + REQUEST_OVERHEAD + head.media_tokens
    previous = body.get("previous_response_id")
    if previous is not None:
        earlier = known.response(str(previous))
        if earlier is None:
            raise ValueError("capguard cannot bound a request that continues a response it did not see")
        full += earlier
    # The least of: every part by its bytes; or an earlier bill that covers the parts up to one of them, plus the
    # bytes of the parts after it. An earlier bill covers a prefix it held whole (its key), or one ending with a
    # user's own message (every assistant turn before that message is an earlier turn in both prompts, billed
    # alike: no API or chat template shows an earlier turn's reasoning again).
    best: int | None = None  # the least (bill - bytes of the parts it covers) seen so far
    covered = 0  # the bytes of the parts that bill covers
    everything = 0  # bytes-bound tokens of the parts so far
    prefixes: list[bytes] = []
    for part in prompt.items:
        link = part.link
        everything += len(part.dumped) + MESSAGE_OVERHEAD + part.media_tokens
        seen = known.prompt(link)
        if part.users_own:
            prefixes.append(link)
            shared = known.prefix(link)
            if shared is not None and (seen is None or shared < seen):
                seen = shared
        if seen is not None and (best is None or seen - everything < best):
            best, covered = seen - everything, everything
    tokens = full + everything
    if best is not None and everything + best + MESSAGE_OVERHEAD < tokens:
        after = everything - covered + MESSAGE_OVERHEAD  # what follows the bill's parts, bounded by bytes
        return InputBound(everything + best + MESSAGE_OVERHEAD, link, True, after, prefixes=tuple(prefixes))
    return InputBound(tokens, link, False, tokens, prefixes=tuple(prefixes))


# What a user's own message may hold, in each API's shape (a Gemini part has no type: its keys say what it is).
_USER_BLOCKS = frozenset(
    {"text", "image", "document", "input_text", "input_image", "input_file", "image_url", "input_audio", "file"}
)
_USER_PARTS = frozenset({"text", "inlineData", "inline_data", "fileData", "file_data"})


def _users_own(item: Any) -> bool:
    """A message the user wrote: role user and nothing but text and media (no tool's result, no model's turn).
    Anything else, or anything unknown, is not one: a shared start is then bounded by its bytes, never too low."""
    if not isinstance(item, dict) or item.get("role") != "user":
        return False
    content = item.get("parts") if "parts" in item else item.get("content")
    if isinstance(content, str):
        return True
    if not isinstance(content, list) or not content:
        return False
    return all(
        isinstance(block, dict)
        and (block.get("type") in _USER_BLOCKS if "type" in block else bool(block) and block.keys() <= _USER_PARTS)
        for block in content
    )


# What each API's counting endpoint takes: the fields that make the prompt (a field it does not know is a 400, and
# the bytes' bound stays). Anthropic: POST .../messages/count_tokens; OpenAI Responses: POST .../responses/input_tokens.
# Chat Completions has no such endpoint.
_COUNTED_FIELDS = {
    ANTHROPIC: frozenset(
        {"model", "messages", "system", "tools", "tool_choice", "thinking", "context_management", "output_config",
         "output_format"}
    ),
    RESPONSES: frozenset(
        {"model", "input", "instructions", "tools", "tool_choice", "reasoning", "text", "previous_response_id",
         "parallel_tool_calls", "truncation"}
    ),
}  # fmt: skip
# Bedrock's CountTokens for a Converse request: `{"input": {"converse": {...}}}` with these of its fields
_COUNTED_FIELDS[CONVERSE] = frozenset({"messages", "system", "toolConfig", "additionalModelRequestFields"})
# Fields of a metered request that change no token of its prompt (they need not be counted).
_COUNTED_FIELDS[GEMINI] = frozenset(
    {"contents", "systemInstruction", "tools", "toolConfig", "generationConfig", "safetySettings"}
)
# Gemini on Vertex: what its countTokens takes, and fields that add no prompt tokens (settings of the call)
_VERTEX_COUNTED = frozenset({"contents", "systemInstruction", "tools", "generationConfig"})
_VERTEX_NO_TOKENS = frozenset({"safetySettings", "toolConfig", "labels"})
_NOT_COUNTED = _NOT_PROMPT | {"speed", "inference_geo", "include", "prompt_cache_retention", "anthropic_version"}


def count_request(
    dialect: str, body: dict[str, Any], bound: InputBound, model: str = "", platform: str | None = None
) -> dict[str, Any] | None:
    """The body to ask the provider's counting endpoint for this prompt's tokens (for Chat Completions, OpenAI's
    Responses count: chat_count); None when there is no endpoint, when the bound would gain too little from a count (a known conversation plus a short tail), or when
    the request holds a field the count might not see (it could add tokens the count would miss). Bedrock's
    CountTokens takes the InvokeModel body whole (base64), so it sees every field the call would bill."""
    if bound.from_bytes < COUNT_WORTH_TOKENS:
        return None
    if dialect == CHAT:  # no count of its own: OpenAI's Responses count takes the same prompt in its shapes
        return responses_count_body(body)
    fields = _COUNTED_FIELDS.get(dialect)
    if fields is None:
        return None
    if dialect == CONVERSE:  # every other field of a Converse request is a setting (inferenceConfig) or refused
        if any(key not in fields and key not in _NOT_COUNTED for key in body):
            return None
        return {"input": {"converse": {k: v for k, v in body.items() if k in fields}}}
    if platform == BEDROCK:
        return {"input": {"invokeModel": {"body": base64.b64encode(msgspec.json.encode(body)).decode()}}}
    if platform == VERTEX_GEMINI:  # Vertex's CountTokensRequest: the prompt's own fields, no request inside
        if any(key not in _VERTEX_COUNTED and key not in _VERTEX_NO_TOKENS for key in body):
            return None
        return {k: v for k, v in body.items() if k in _VERTEX_COUNTED}
    if any(key not in fields and key not in _NOT_COUNTED for key in body):
        return None
    counted = {k: v for k, v in body.items() if k in fields}
    if dialect == GEMINI:  # the whole request, so that its system instruction and tools are counted too
        return {"generateContentRequest": {"model": f"models/{split_provider(model)[1]}", **counted}}
    if "model" not in counted and model:  # Vertex: the path names the model, its count takes it in the body
        counted = {"model": split_provider(model)[1], **counted}
    return counted


def counted_bound(bound: InputBound, answer: Any) -> InputBound:
    """The bound from the provider's answer to `count_request` (`{"input_tokens": n}`; Gemini's `{"totalTokens": n}`,
    Bedrock's `{"inputTokens": n}`): the count plus
    COUNT_MARGIN, never above the bytes' bound. An answer that is no count of this prompt (no JSON object, n not a
    whole number, negative, above the bytes' bound, below a token per COUNT_MAX_BYTES_PER_TOKEN bytes) leaves the
    bytes' bound: fail closed, never a looser bound than the bytes give."""
    counted = None
    if isinstance(answer, dict):  # Anthropic's, Gemini's, Bedrock's
        counted = next((answer[k] for k in ("input_tokens", "totalTokens", "inputTokens") if k in answer), None)
    if type(counted) is not int or counted < 0 or counted > bound.tokens:
        return bound
    if counted * COUNT_MAX_BYTES_PER_TOKEN < bound.tokens - REQUEST_OVERHEAD:
        return bound
    held = -(-counted * (100 + COUNT_MARGIN_PERCENT) // 100) + COUNT_MARGIN_TOKENS
    if held >= bound.tokens:
        return bound
    return InputBound(held, bound.key, bound.tight, 0, counted=True, prefixes=bound.prefixes)


def media_allowance(value: Any) -> int:
    """Tokens of media the bytes do not show: images and documents given by URL or id."""
    if isinstance(value, dict):
        own = 0
        kind = value.get("type")
        if kind in _MEDIA and not _inline(value):
            own = IMAGE_TOKENS if "image" in str(kind) else REFERENCED_DOCUMENT_TOKENS
        own += _gemini_inline(value.get("inlineData", value.get("inline_data")))
        return own + sum(media_allowance(v) for v in value.values() if isinstance(v, (dict, list)))
    if isinstance(value, list):
        return sum(media_allowance(v) for v in value if isinstance(v, (dict, list)))
    return 0


def _gemini_inline(data: Any) -> int:
    """Gemini's inline media (base64 in the request): an image is billed by its size on screen, not its bytes (a
    tiny image can cost more tokens than its bytes), a PDF by its pages; text, audio and video bill fewer tokens
    than their bytes."""
    if not isinstance(data, dict):
        return 0
    mime = str(data.get("mimeType") or data.get("mime_type") or "")
    if mime.startswith("image/"):
        return IMAGE_TOKENS
    return REFERENCED_DOCUMENT_TOKENS if mime == "application/pdf" else 0


def _inline(block: dict[str, Any]) -> bool:
    """The media's own bytes are in the request (base64), so they already bound its tokens."""
    source = block.get("source")
    if isinstance(source, dict):
        return source.get("type") in ("base64", "text", "content")
    for key in ("image_url", "file_data", "data"):
        value = block.get(key)
        url = value.get("url") if isinstance(value, dict) else value
        if isinstance(url, str) and (url.startswith("data:") or key != "image_url"):
            return True
    return False


@dataclass(frozen=True)
class WorstCost:
    """The most a call can cost for n output tokens, and the reply that costs it (for a charge by the bound)."""

    cost: Callable[[int], int]
    reply: Callable[[int], Reply]


def worst_cost(
    pricer: Pricer,
    model: str,
    prompt_tokens: int,
    ask: Ask,
    dialect: str,
    cost_of: Callable[[Reply], int | None] | None = None,
) -> WorstCost | None:
    """Prompt billed at the dearest rate the request can cause (plain input, or the cache write it asks for),
    output times the completions asked; long-context tiers and fast mode from the same prices as the bill. None
    when nobody can price the model."""
    if not pricer.can_price(model):
        return None
    price = cost_of or (lambda reply: pricer.price(reply).cost_micro)  # a faster pricer giving the same figures
    geo = ask.geo or ("us" if dialect == ANTHROPIC else None)  # the workspace may be US-only (1.1x)
    details = {"speed": ask.speed, "inference_geo": geo}
    p = prompt_tokens
    splits = [(p, 0, 0)]  # (plain input, cache writes, of them to the 1-hour cache)
    if ask.cache_write:
        splits.append((0, p, 0))
    if ask.cache_write == "1h":
        splits.append((0, p, p))

    @functools.lru_cache(maxsize=64)  # a clamp asks for a few values, some twice
    def priced(output_tokens: int) -> tuple[int, Reply]:
        replies = [
            Reply(
                "worst",
                model,
                input_tokens=plain,
                output_tokens=output_tokens * ask.choices,
                cache_write_tokens=write,
                cache_write_1h_tokens=hour,
                details=details,
            )
            for plain, write, hour in splits
        ]
        return max(((price(r) or 0, r) for r in replies), key=lambda pair: pair[0])

    return WorstCost(lambda n: priced(n)[0], lambda n: priced(n)[1])


def cut_output_tokens(output_bytes: int, events: int, max_out: int, hidden_reasoning: bool) -> int:
    """What a reply cut short may have been billed for output: its streamed bytes (a token is at least a byte)
    plus slack for tokens in flight, never above its limit; the whole limit when the model may reason unseen."""
    if hidden_reasoning:
        return max_out
    return min(max_out, output_bytes + CUT_SLACK_PER_EVENT * events + CUT_SLACK)


@functools.lru_cache(maxsize=256)
def context_window(model: str) -> int | None:
    """The model's context window from genai-prices (the most a reply could run to), or None."""
    from genai_prices import Usage, calc_price

    provider, name = split_provider(model)
    for candidate in (provider, None) if provider else (None,):
        try:
            found = calc_price(Usage(input_tokens=1, output_tokens=1), name, provider_id=candidate).model
        except (LookupError, ValueError):
            continue
        return found.context_window
    return None
