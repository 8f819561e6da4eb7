"""Claude Code's OpenTelemetry api_request events (one per API call) as capguard events.

Pure: a line written by capguard.metering.otel_receiver's receiver in, a Reply out. This source sees what the transcript
misses (compaction calls, the cost Claude charges for an aborted stream); the shared key
`claude:<request id>` makes a call seen in both places count once.
"""

from __future__ import annotations

from capguard.core import sanitize
from capguard.core.events import Event, Malformed, Reply, json_object

_TOKENS = {
    "input_tokens": "input_tokens",
    "output_tokens": "output_tokens",
    "cache_read_tokens": "cache_read_tokens",
    "cache_write_tokens": "cache_creation_tokens",
    "cache_write_1h_tokens": "cache_creation_1h_tokens",
}


def _count(attrs: dict, name: str) -> int:
    value = attrs.get(name)
    return 0 if value is None else sanitize.count(value, name)


def _cost_micro(attrs: dict) -> int:
    micros = attrs.get("cost_usd_micros")
    if micros:
        return sanitize.micro(micros, "cost_usd_micros")
    usd = attrs.get("cost_usd")
    return 0 if usd is None else sanitize.usd_micro(usd, "cost_usd")


class OtelParser:
    def __init__(self, source: str):
        self.source = source

    def feed(self, line: bytes, offset: int) -> list[Event]:
        if not line.strip():
            return []
        try:
            attrs = json_object(line)
            counts = {name: _count(attrs, name) for name in _TOKENS.values()}
            micros = _cost_micro(attrs)
        except ValueError as err:  # broken JSON, a count or a cost that is not a number (sanitize.NotANumber)
            return [Malformed(self.source, offset, str(err)[:120])]
        request = sanitize.name(attrs.get("request_id"))
        query_source = sanitize.name(attrs.get("query_source"))
        return [
            Reply(
                key=f"claude:{request}" if request else f"claude:otel:{self.source}@{offset}",
                model=sanitize.name(attrs.get("model")),
                **{field: counts[name] for field, name in _TOKENS.items()},
                reported_cost_micro=micros or None,
                source=self.source,
                offset=offset,
                step=False,  # steps come from the main transcript, which tells the main agent from subagents
                scope=sanitize.name(attrs.get("session.id")),
                details={"query_source": query_source} if query_source else {},
                suspicious=sanitize.at_bound(counts) or sanitize.usd_at_bound(micros),
            )
        ]
