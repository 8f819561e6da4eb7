"""The ledger reads behind `capguard report` and `capguard suggest`: runs of a period and their usage sums.

Read-only, portable SQL (`?` placeholders, SUBSTR, CASE) through `Ledger.query`, for SQLite and PostgreSQL alike.
A run belongs to the period when its span overlaps it; its usage counts only the events that occurred in it.
"""

from __future__ import annotations

from dataclasses import dataclass

from capguard.core.usage import total_sql
from capguard.ledger import Ledger
from capguard.reports.aggregate import BY, NONE_KEY, Part, Run

_KEY_SQL = {"month": "SUBSTR(e.occurred_utc, 1, 7)", "day": "SUBSTR(e.occurred_utc, 1, 10)", "model": "e.model"}

_PARTS = f"""SELECT e.run_id AS run_id, {{key}} AS k,
  CAST(COALESCE(SUM(e.cost_micro_usd), 0) AS BIGINT) AS cost,
  CAST(SUM({total_sql("e")}) AS BIGINT) AS tokens,
  CAST(SUM(e.output_tokens) AS BIGINT) AS output,
  CAST(SUM(CASE WHEN e.dedupe_key LIKE '%+%' THEN 0 ELSE 1 END) AS BIGINT) AS replies,
  CAST(SUM(CASE WHEN e.cost_micro_usd IS NULL THEN 1 ELSE 0 END) AS BIGINT) AS unpriced
FROM usage_events e{{where}} GROUP BY e.run_id{{group}}"""

_RUNS = """SELECT r.id, u.name AS user_name, r.agent, r.project, r.line, r.status, r.stop_reason, r.started_utc,
  r.ended_utc, r.steps FROM runs r JOIN users u ON u.id = r.user_id"""


@dataclass(frozen=True)
class Period:
    """[since, until) in canonical UTC text; None is open-ended."""

    since_utc: str | None = None
    until_utc: str | None = None


def _where(clauses: list[tuple[str, str | None]]) -> tuple[str, list[str]]:
    used = [(sql, value) for sql, value in clauses if value is not None]
    return (" WHERE " + " AND ".join(sql for sql, _ in used) if used else ""), [value for _, value in used]


def fetch(ledger: Ledger, period: Period, by: str = "run") -> tuple[dict[str, Run], list[Part]]:
    """The runs overlapping the period and their usage in it, split by `by` when it is a per-event key."""
    if by not in BY:
        raise ValueError(f"cannot group by {by!r}")
    where, params = _where([("e.occurred_utc >= ?", period.since_utc), ("e.occurred_utc < ?", period.until_utc)])
    key = _KEY_SQL.get(by)  # PostgreSQL refuses a constant in GROUP BY: run-level keys group by run alone
    sql = _PARTS.format(key=key or "NULL", where=where, group=f", {key}" if key else "")
    parts = [
        Part(
            row["run_id"],
            row["k"],
            int(row["cost"]),
            int(row["tokens"]),
            int(row["output"]),
            int(row["replies"]),
            int(row["unpriced"]),
        )
        for row in ledger.query(sql, params)
    ]
    where, params = _where(
        [("r.started_utc < ?", period.until_utc), ("(r.ended_utc IS NULL OR r.ended_utc >= ?)", period.since_utc)]
    )
    runs = {row["id"]: _run(row) for row in ledger.query(_RUNS + where, params)}
    missing = sorted({part.run_id for part in parts} - set(runs))
    for i in range(0, len(missing), 500):  # usage in the period of a run whose recorded span says otherwise
        chunk = missing[i : i + 500]
        sql = f"{_RUNS} WHERE r.id IN ({', '.join('?' * len(chunk))})"
        runs.update((row["id"], _run(row)) for row in ledger.query(sql, chunk))
    return runs, parts


def _run(row: dict) -> Run:
    return Run(
        run_id=row["id"],
        user=row["user_name"],
        agent=row["agent"],
        project=row["project"],
        line=row["line"],
        status=row["status"],
        stop_reason=row["stop_reason"],
        started_utc=row["started_utc"],
        ended_utc=row["ended_utc"],
        steps=row["steps"],
    )


_TOKENS_BY_MODEL = """SELECT e.model AS model, CAST(SUM(e.input_tokens) AS BIGINT) AS input,
  CAST(SUM(e.output_tokens) AS BIGINT) AS output, CAST(SUM(e.cache_read_tokens) AS BIGINT) AS cache_read,
  CAST(SUM(e.cache_write_tokens) AS BIGINT) AS cache_write
FROM usage_events e{where} GROUP BY e.model"""

TOKEN_KINDS = ("input", "output", "cache_read", "cache_write")


def tokens_by_model(ledger: Ledger, period: Period) -> dict[str, dict[str, int]]:
    """Tokens of the usage events in the period per model (`(none)` when unknown) and kind (TOKEN_KINDS)."""
    where, params = _where([("e.occurred_utc >= ?", period.since_utc), ("e.occurred_utc < ?", period.until_utc)])
    rows = ledger.query(_TOKENS_BY_MODEL.format(where=where), params)
    return {row["model"] or NONE_KEY: {kind: int(row[kind]) for kind in TOKEN_KINDS} for row in rows}


def user_names(ledger: Ledger) -> list[str]:
    """Every developer the ledger knows, by name."""
    return [row["name"] for row in ledger.query("SELECT name FROM users ORDER BY name", [])]


def runs_by_prefix(ledger: Ledger, prefix: str, *, limit: int = 11) -> list[str]:
    """The ids of up to `limit` runs whose id starts with `prefix` (SUBSTR: no LIKE wildcards to escape)."""
    sql = "SELECT id FROM runs WHERE SUBSTR(id, 1, ?) = ? ORDER BY id LIMIT ?"
    return [row["id"] for row in ledger.query(sql, [len(prefix), prefix, limit])]
