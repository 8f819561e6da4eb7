"""Claude Code's OpenTelemetry api_request events (one per API call) as capguard events.

Pure: a line written by capguard.otel's receiver in, a Reply out. This source sees what the transcript
misses (compaction calls, the cost Claude charges for an aborted stream); the shared key
`claude:<request id>` makes a call seen in both places count once.
"""

from __future__ import annotations


from capguard.events import Event, Malformed, Reply, json_object


def _int(attrs: dict, name: str) -> int:
    value = attrs.get(name) or 0
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 else 0


class OtelParser:
    def __init__(self, source: str):
        self.source = source

    def feed(self, line: bytes, offset: int) -> list[Event]:
        if not line.strip():
            return []
        try:
            attrs = json_object(line)
        except ValueError as err:
            return [Malformed(self.source, offset, str(err)[:120])]
        request = attrs.get("request_id")
        micros = _int(attrs, "cost_usd_micros") or round(float(attrs.get("cost_usd") or 0) * 1_000_000)
        return [Reply(
            key=f"claude:{request}" if request else f"claude:otel:{self.source}@{offset}",
            model=attrs.get("model"),
            input_tokens=_int(attrs, "input_tokens"),
            output_tokens=_int(attrs, "output_tokens"),
            cache_read_tokens=_int(attrs, "cache_read_tokens"),
            cache_write_tokens=_int(attrs, "cache_creation_tokens"),
            cache_write_1h_tokens=_int(attrs, "cache_creation_1h_tokens"),
            reported_cost_micro=micros or None,
            source=self.source,
            offset=offset,
            step=False,  # steps come from the main transcript, which tells the main agent from subagents
            scope=attrs.get("session.id"),
            details={"query_source": attrs.get("query_source")} if attrs.get("query_source") else {},
        )]
