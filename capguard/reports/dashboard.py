"""The dashboard's figures: spend per day, cost per run, caps fired, tokens by model, top runs, the month.

Pure: the report's plain rows (and the month's standings) in, one JSON-ready dict out, which html.py embeds and
the page's charts draw. Money goes out in dollars, exact to the micro-dollar; days are UTC, as in `capguard report`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import date, timedelta

from capguard.core import monthly
from capguard.core.monthly import Standing
from capguard.reports import aggregate
from capguard.reports.aggregate import NONE_KEY, Part, Run

TOP = 10  # runs in the top-runs chart and table
BINS = 20  # about this many bars in the cost-per-run histogram


def usd(micro: int | float | None) -> float | None:
    return None if micro is None else round(micro / 1e6, 6)


def days_between(first: str, last: str) -> list[str]:
    """Every UTC day from `first` to `last` (YYYY-MM-DD), so that quiet days show as gaps, not as nothing."""
    start, end = date.fromisoformat(first), date.fromisoformat(last)
    return [(start + timedelta(days=n)).isoformat() for n in range((end - start).days + 1)]


def spend_by_day(runs: dict[str, Run], day_parts: list[Part], days: list[str], who: Callable[[Run], str]) -> list:
    """One series per developer (or budget line): its spend on each day, the costliest series first."""
    cells: dict[str, dict[str, int]] = {}
    for part in day_parts:
        if part.run_id in runs and part.key:
            row = cells.setdefault(who(runs[part.run_id]), {})
            row[part.key] = row.get(part.key, 0) + part.cost_micro
    ranked = sorted(cells.items(), key=lambda item: (-sum(item[1].values()), item[0]))
    return [{"name": name, "usd": [usd(row.get(day, 0)) for day in days]} for name, row in ranked]


def nice_width(span: float, bins: int = BINS) -> float:
    """A bin width of 1, 2 or 5 times a power of ten that cuts `span` into at most about `bins` bars."""
    if span <= 0:
        return 1.0
    raw = span / bins
    power = 10 ** math.floor(math.log10(raw))
    return next(step * power for step in (1, 2, 5, 10) if step * power >= raw)


def cost_per_run(costs_micro: list[int]) -> dict:
    """A histogram of the runs' costs (dollars) and their nearest-rank p50/p90/p99, as `capguard report` has them."""
    dist = aggregate.distribution([float(c) for c in costs_micro])
    top = max(costs_micro, default=0) / 1e6
    width = nice_width(top)
    counts = [0] * (int(top // width) + 1)
    for cost in costs_micro:
        counts[int((cost / 1e6) // width)] += 1
    bins = [{"from": round(i * width, 6), "to": round((i + 1) * width, 6), "runs": n} for i, n in enumerate(counts)]
    return {"runs": len(costs_micro), "width": width, "bins": bins, **{k: usd(v) for k, v in dist.items()}}


def exhaustion(runs: dict[str, Run], days: list[str]) -> dict:
    """Per start day: the supervised runs, and how many each cap stopped (the rate is stopped / supervised)."""
    supervised = dict.fromkeys(days, 0)
    stops: dict[str, dict[str, int]] = {}
    for run in runs.values():
        day = run.started_utc[:10]
        if not run.supervised or day not in supervised:
            continue
        supervised[day] += 1
        if run.stop_reason:
            per_day = stops.setdefault(run.stop_reason, {})
            per_day[day] = per_day.get(day, 0) + 1
    reasons = sorted(stops, key=lambda reason: (-sum(stops[reason].values()), reason))
    return {
        "supervised": [supervised[day] for day in days],
        "reasons": [{"name": reason, "stopped": [stops[reason].get(day, 0) for day in days]} for reason in reasons],
    }


def tokens_by_model(rows: dict[str, dict[str, int]]) -> list[dict]:
    """Each model's tokens by kind (input, output, cache_read, cache_write), the most tokens first."""
    ranked = sorted(rows.items(), key=lambda item: (-sum(item[1].values()), item[0]))
    return [{"model": model, **kinds} for model, kinds in ranked]


def top_run(top: aggregate.TopRun) -> dict:
    run = top.run
    return {
        "run_id": run.run_id,
        "user": run.user,
        "agent": run.agent,
        "project": run.project,
        "line": run.line,
        "started_utc": run.started_utc,
        "status": run.status,
        "stop_reason": run.stop_reason,
        "cost_usd": usd(top.cost_micro),
        "tokens": top.tokens,
        "replies": top.replies,
    }


def month(standings: list[Standing]) -> dict | None:
    """The month's budgets as monthly.as_json has them, each with its one-line summary."""
    found = monthly.as_json(standings)
    if found is not None:
        for budget, standing in zip(found["budgets"], standings):
            budget["summary"] = standing.summary()
    return found


def figures(
    runs: dict[str, Run],
    day_parts: list[Part],
    tokens: dict[str, dict[str, int]],
    standings: list[Standing],
    *,
    period: str,
    ledger: str,
    generated_utc: str,
) -> dict:
    """Everything the page shows, from `fetch(ledger, period, "day")`, `tokens_by_model` and the month's standings."""
    keys = sorted(
        {p.key for p in day_parts if p.key and p.run_id in runs} | {r.started_utc[:10] for r in runs.values()}
    )
    days = days_between(keys[0], keys[-1]) if keys else []
    total = aggregate.totals(runs, day_parts)
    per_run = aggregate.top_runs(runs, day_parts, None)
    return {
        "period": period,
        "ledger": ledger,
        "generated_utc": generated_utc,
        "totals": {
            "runs": total.runs,
            "cost_usd": usd(total.cost_micro),
            "tokens": total.tokens,
            "replies": total.replies,
            "supervised": total.supervised,
            "stopped": total.stopped,
            "imported": sum(1 for run in runs.values() if run.status == "imported"),
            "unpriced": total.unpriced,
        },
        "days": days,
        "spend_by_user": spend_by_day(runs, day_parts, days, lambda run: run.user),
        "spend_by_line": spend_by_day(runs, day_parts, days, lambda run: run.line or NONE_KEY),
        "cost_per_run": cost_per_run([top.cost_micro for top in per_run]),
        "exhaustion": exhaustion(runs, days),
        "tokens_by_model": tokens_by_model(tokens),
        "top_runs": [top_run(top) for top in per_run[:TOP]],
        "month": month(standings),
    }
