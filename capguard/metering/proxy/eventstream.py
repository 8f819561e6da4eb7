"""AWS's event stream (`application/vnd.amazon.eventstream`), as Amazon Bedrock streams a model's reply
(InvokeModelWithResponseStream): binary messages cut from a byte stream as it arrives, each checked by its two
CRC32s, for reading usage while the bytes pass through unchanged.

A message: its total length and its headers' length (4 bytes each, big-endian), a CRC of those 8 bytes, the
headers, the payload, a CRC of everything before it. Bedrock's `chunk` events carry `{"bytes": "<base64>"}`, the
base64 of one Messages API event (`message_start`, `message_delta`...). Pure: bytes in, messages out.
"""

from __future__ import annotations

import base64
import binascii
import struct
import zlib
from dataclasses import dataclass
from typing import Any

import msgspec

MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # AWS's own limit is 16 MB; a longer one means the stream cannot be read
_PRELUDE = 12
_MINIMUM = 16  # prelude and message CRC: a message with no headers and no payload
# A header's value by its type byte: how many bytes it has (None: a 2-byte length first)
_FIXED = {0: 0, 1: 0, 2: 1, 3: 2, 4: 4, 5: 8, 8: 8, 9: 16}


@dataclass(frozen=True)
class Message:
    headers: dict[str, str]  # the string-valued ones (`:message-type`, `:event-type`, `:exception-type`...)
    payload: bytes


class MessageSplitter:
    """Feeds on chunks as they come; returns each complete message. A message that fails its CRC, or a length no
    message has, ends the reading: `broken` says why, and nothing after it is believed."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.broken: str | None = None

    def feed(self, chunk: bytes) -> list[Message]:
        if self.broken:
            return []
        self._buffer += chunk
        buffer, at = self._buffer, 0
        messages: list[Message] = []
        while len(buffer) - at >= _PRELUDE:
            total, header_length, prelude_crc = struct.unpack_from(">III", buffer, at)
            if zlib.crc32(buffer[at : at + 8]) != prelude_crc:
                return self._break(messages, "a message's prelude failed its CRC")
            if not _MINIMUM <= total <= MAX_MESSAGE_BYTES or header_length > total - _MINIMUM:
                return self._break(messages, f"a message claims {total} bytes")
            if len(buffer) - at < total:
                break
            raw = bytes(buffer[at : at + total])
            at += total
            if zlib.crc32(raw[:-4]) != struct.unpack(">I", raw[-4:])[0]:
                return self._break(messages, "a message failed its CRC")
            headers = _headers(raw[_PRELUDE : _PRELUDE + header_length])
            if headers is None:
                return self._break(messages, "a message's headers cannot be read")
            messages.append(Message(headers, raw[_PRELUDE + header_length : -4]))
        del buffer[:at]  # once per chunk: what is left is one message's start at most
        return messages

    def _break(self, messages: list[Message], why: str) -> list[Message]:
        self.broken = why
        self._buffer.clear()
        return messages


def _headers(raw: bytes) -> dict[str, str] | None:
    out: dict[str, str] = {}
    at = 0
    try:
        while at < len(raw):
            length = raw[at]
            name = raw[at + 1 : at + 1 + length].decode()
            at += 1 + length
            kind = raw[at]
            at += 1
            if kind in _FIXED:
                at += _FIXED[kind]
            elif kind in (6, 7):  # bytes, string: a 2-byte length, then the value
                (size,) = struct.unpack_from(">H", raw, at)
                value = raw[at + 2 : at + 2 + size]
                at += 2 + size
                if kind == 7:
                    out[name] = value.decode()
            else:
                return None
            if at > len(raw):
                return None
    except (IndexError, struct.error, UnicodeDecodeError):
        return None
    return out


def bedrock_event(message: Message) -> dict[str, Any] | None:
    """The Messages API event a Bedrock `chunk` carries, or None (another kind of message, or none readable)."""
    if message.headers.get(":message-type") != "event" or message.headers.get(":event-type") != "chunk":
        return None
    try:
        outer = msgspec.json.decode(message.payload)
        inner = msgspec.json.decode(base64.b64decode(outer["bytes"], validate=True))
    except (ValueError, RecursionError, KeyError, TypeError, binascii.Error):
        return None
    return inner if isinstance(inner, dict) else None


def converse_event(message: Message) -> dict[str, Any] | None:
    """A Converse stream's event (`messageStart`, `contentBlockDelta`, `metadata`...: its JSON payload as it is) as
    `{"converse": <event type>, "event": <payload>}`, or None (an exception, or nothing readable)."""
    kind = message.headers.get(":event-type")
    if message.headers.get(":message-type") != "event" or not kind:
        return None
    try:
        payload = msgspec.json.decode(message.payload)
    except (ValueError, RecursionError):
        return None
    return {"converse": kind, "event": payload} if isinstance(payload, dict) else None


def is_exception(message: Message) -> bool:
    """Bedrock ended the stream with an error (throttling, a model error...) instead of an event."""
    return message.headers.get(":message-type") in ("exception", "error")
