"""core/usage.py: one definition of a record's token total, in Python and in the ledger's SQL."""

from __future__ import annotations

import sqlite3

from capguard.core.events import Reply
from capguard.core.usage import TOKEN_COLUMNS, Tokens, total_sql


def test_the_token_total_counts_input_output_and_both_cache_kinds():
    reply = Reply(key="k", model="m", input_tokens=1, output_tokens=20, cache_read_tokens=300, cache_write_tokens=4000)
    assert Tokens.of(reply) == Tokens(1, 20, 300, 4000)
    assert reply.tokens == Tokens.of(reply).total == 4321


def test_the_ledger_sums_the_same_columns_as_the_total():
    db = sqlite3.connect(":memory:")
    db.execute(f"CREATE TABLE usage_events ({', '.join(TOKEN_COLUMNS)})")
    db.execute("INSERT INTO usage_events VALUES (1, 20, 300, 4000)")
    assert total_sql("e") == "e.input_tokens + e.output_tokens + e.cache_read_tokens + e.cache_write_tokens"
    assert db.execute(f"SELECT {total_sql('e')} FROM usage_events e").fetchone() == (4321,)
