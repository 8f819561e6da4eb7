"""The token counts of one reply or of many: the one type that knows what "all the tokens" is.

Caps, reports and the ledger's sums ask `Tokens.total` (or sum `TOKEN_COLUMNS` in SQL); none adds them up itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

# The ledger's usage columns whose sum is a record's total, in the order of Tokens' fields
TOKEN_COLUMNS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")


class TokenCounts(Protocol):
    """Anything that carries the four counts under their usual names (a Reply, a UsageRecord, a model's totals)."""

    @property
    def input_tokens(self) -> int: ...
    @property
    def output_tokens(self) -> int: ...
    @property
    def cache_read_tokens(self) -> int: ...
    @property
    def cache_write_tokens(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Tokens:
    """Token counts; `input` excludes cache reads and writes, as the APIs report it."""

    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0

    @property
    def total(self) -> int:
        """All token kinds: what the tokens cap counts."""
        return counts_total(self.input, self.output, self.cache_read, self.cache_write)

    @classmethod
    def of(cls, counts: TokenCounts) -> Tokens:
        return cls(counts.input_tokens, counts.output_tokens, counts.cache_read_tokens, counts.cache_write_tokens)


def counts_total(input_tokens: int, output_tokens: int, cache_read_tokens: int, cache_write_tokens: int) -> int:
    """`Tokens.total` of four counts, without building a `Tokens`: for loops over an import's 100k+ rows, where
    a `Tokens` per row would cost several times the sum. Call it as `counts_total(*row[i : i + 4])` on counts
    stored in `TOKEN_COLUMNS` order."""
    return input_tokens + output_tokens + cache_read_tokens + cache_write_tokens


def total_sql(alias: str = "") -> str:
    """The SQL expression of a usage row's total, e.g. `e.input_tokens + e.output_tokens + ...` for alias "e"."""
    prefix = f"{alias}." if alias else ""
    return " + ".join(prefix + column for column in TOKEN_COLUMNS)
