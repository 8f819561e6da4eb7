# The compiled line reader (_claude_scan.c): optional, see claude_scan.py.
from collections.abc import Iterator
from typing import Any

Fields = tuple[Any, ...]  # decode.from_fields' arguments, then cwd and version
Facts = tuple[str | None, str | None, str | None]  # the file's session, cwd and version

class Lines(Iterator[tuple[int, int, int, Fields | None]]):
    first_at: str | None
    last_at: str | None
    def __init__(self, data: bytes, size: int = -1) -> None: ...
    def __next__(self) -> tuple[int, int, int, Fields | None]: ...
    def counted(self, request_id: object) -> None: ...
    def replies(
        self,
        seen: dict[str, list[int]],
        subagent: bool,
        base: int,
        out: list[Any],
        want_session: bool,
        fold: dict[str, int] | None,
    ) -> tuple[int, int, int, Fields | None] | Facts | None: ...

def read_fields(line: bytes) -> Fields | None: ...
def configure(
    reply_type: type, details_of: Any, models: dict[str, str], synthetic: bytes, max_tokens: int, max_name: int
) -> None: ...
def list_jsonl(folder: str) -> list[tuple[str, int, int, int, float]]: ...
