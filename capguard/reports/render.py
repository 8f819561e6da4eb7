"""Report output: text tables that fit an 80-column terminal, CSV for spreadsheets, JSON for scripts.

Pure: figures in, text out.
"""

from __future__ import annotations

import csv
import io
import textwrap
from dataclasses import dataclass

from capguard.core.sanitize import csv_cell, printable
from capguard.core.units import format_tokens, format_usd
from capguard.reports.aggregate import Group, TopRun, stop_reasons

WIDTH = 80
GAP = "  "
NBSP = "\u00a0"
SHORT_ID = 14  # what the text tables print of a run id: `capguard show` takes any unique prefix


def short_id(run_id: str) -> str:
    """The start of a run id, as the tables print it (time and randomness: unique in practice, checked by `show`)."""
    return run_id[:SHORT_ID]


def _key(report: Report, key: str) -> str:
    return short_id(key) if report.by == "run" else key


def ellipsize(text: str, width: int, *, keep_end: bool = False) -> str:
    """`text` cut to `width` characters with `…` (at the start for paths and ids whose end says most)."""
    if len(text) <= width:
        return text
    if width <= 1:
        return "…"[:width]
    return "…" + text[-(width - 1) :] if keep_end else text[: width - 1] + "…"


def table(
    header: list[str],
    rows: list[list[str]],
    *,
    flex: int = 0,
    width: int = WIDTH,
    keep_end: bool = False,
    min_flex: int = 8,
    left: tuple[int, ...] = (),
) -> list[str]:
    """Columns sized to their content; column `flex` shrinks to fit `width`. Numbers are right-aligned; `flex`
    and the columns in `left` are left-aligned. Cells are escaped: names in a ledger come from outside."""
    header, rows = [printable(cell) for cell in header], [[printable(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    others = sum(w for i, w in enumerate(widths) if i != flex) + len(GAP) * (len(header) - 1)
    widths[flex] = max(min_flex, min(widths[flex], width - others))
    lines = []
    for row in [header, *rows]:
        cells = []
        for i, cell in enumerate(row):
            if i == flex:
                cells.append(ellipsize(cell, widths[i], keep_end=keep_end).ljust(widths[i]))
            elif i in left:
                cells.append(cell.ljust(widths[i]))
            else:
                cells.append(cell.rjust(widths[i]))
        lines.append(GAP.join(cells).rstrip())
    return lines


def _usd(micro: float | None) -> str:
    return "-" if micro is None else format_usd(int(micro))


def _tokens(count: float | None) -> str:
    return "-" if count is None else format_tokens(int(count))


def _rate(rate: float | None) -> str:
    return "-" if rate is None else f"{100 * rate:.1f}%"


@dataclass(frozen=True)
class Report:
    by: str
    period: str  # as shown in the title, e.g. "2026-11-01 .. 2026-11-23 (UTC)"
    ledger: str
    groups: list[Group]
    total: Group
    top: list[TopRun]
    imported: int  # runs built by `capguard import`


_PATH_KEYS = ("project",)


def text(report: Report) -> list[str]:
    keep_end = report.by in _PATH_KEYS
    head = report.by.upper()
    supervised = report.total.supervised
    lines = [
        ellipsize(f"capguard report by {report.by}, {report.period}", WIDTH),
        f"ledger {ellipsize(report.ledger, WIDTH - 7, keep_end=True)}",
        f"{report.total.runs:,} runs ({supervised:,} supervised, {report.imported:,} imported),"
        f" {_usd(report.total.cost_micro)}",
        "",
    ]
    rows = [
        [
            _key(report, g.key),
            f"{g.runs:,}",
            _usd(g.cost_micro),
            _usd(g.avg_cost_micro),
            _tokens(g.tokens),
            _rate(g.stop_rate),
        ]
        for g in [*report.groups, report.total]
    ]
    lines += table([head, "RUNS", "SPEND", "AVG/RUN", "TOKENS", "STOPPED"], rows, keep_end=keep_end)
    if report.by != "run":
        lines += ["", "Per run (nearest-rank percentiles)"]
        rows = [
            [
                g.key,
                *(_usd(g.cost_dist[p]) for p in ("p50", "p90", "p99")),
                *(_tokens(g.tokens_dist[p]) for p in ("p50", "p90", "p99")),
            ]
            for g in [*report.groups, report.total]
        ]
        lines += table([head, "COST p50", "p90", "p99", "TOKENS p50", "p90", "p99"], rows, keep_end=keep_end)
    lines += stops_text(report)
    lines += top_text(report)
    return lines


def stops_text(report: Report) -> list[str]:
    """Budget exhaustion: per group, the share of supervised runs each cap stopped."""
    if not any(g.stops for g in report.groups):
        note = "no run was stopped by a cap" if report.total.supervised else "no supervised runs in this period"
        return ["", f"Stopped by a cap: {note}"]
    lines = ["", "Stopped by a cap (share of the supervised runs)"]
    for group in [*report.groups, report.total]:
        if not group.supervised:
            continue
        # no line break inside one reason's figures: "wall 2 (13.3%)" stays whole
        reasons = ", ".join(
            f"{reason} {group.stops[reason]} ({_rate(group.stops[reason] / group.supervised)})".replace(" ", NBSP)
            for reason in stop_reasons([group])
        )
        line = (
            f"{ellipsize(printable(_key(report, group.key)), 24, keep_end=report.by in _PATH_KEYS)}: {group.supervised:,} supervised, "
            f"{group.stopped:,} stopped ({_rate(group.stop_rate)})" + (f": {reasons}" if reasons else "")
        )
        lines += [part.replace(NBSP, " ") for part in textwrap.wrap(line, WIDTH, subsequent_indent="    ")]
    return lines


def top_text(report: Report) -> list[str]:
    if not report.top:
        return []
    title = "Runs by cost" if report.by == "run" else f"Top {len(report.top)} runs by cost"
    where = "USER" if report.by == "user" else "PROJECT"
    rows = [
        [
            short_id(t.run.run_id),
            t.run.started_utc[:16].replace("T", " "),
            t.run.agent,
            _usd(t.cost_micro),
            _tokens(t.tokens),
            t.run.stop_reason or ("imported" if t.run.status == "imported" else "-"),
            (t.run.user if where == "USER" else t.run.project) or "-",
        ]
        for t in report.top
    ]
    lines = table(
        ["RUN", "STARTED (UTC)", "AGENT", "COST", "TOKENS", "STOP", where],
        rows,
        flex=6,
        keep_end=True,
        left=(0, 1, 2, 5),
    )
    return ["", title, *lines]


def group_json(group: Group) -> dict:
    return {
        "key": group.key,
        "runs": group.runs,
        "supervised_runs": group.supervised,
        "cost_usd": group.cost_micro / 1e6,
        "avg_cost_usd": group.avg_cost_micro / 1e6,
        "tokens": group.tokens,
        "replies": group.replies,
        "unpriced_replies": group.unpriced,
        "cost_usd_per_run": {p: None if v is None else v / 1e6 for p, v in group.cost_dist.items()},
        "tokens_per_run": group.tokens_dist,
        "stopped_runs": group.stopped,
        "stop_rate": group.stop_rate,
        "stops": dict(sorted(group.stops.items())),
        "stop_rates": group.stop_rates(),
    }


def top_json(top: TopRun) -> dict:
    run = top.run
    return {
        "run_id": run.run_id,
        "user": run.user,
        "agent": run.agent,
        "project": run.project,
        "line": run.line,
        "status": run.status,
        "stop_reason": run.stop_reason,
        "started_utc": run.started_utc,
        "ended_utc": run.ended_utc,
        "cost_usd": top.cost_micro / 1e6,
        "tokens": top.tokens,
        "replies": top.replies,
    }


def as_json(report: Report, period: dict) -> dict:
    return {
        "by": report.by,
        **period,
        "ledger": report.ledger,
        "groups": [group_json(g) for g in report.groups],
        "total": group_json(report.total),
        "imported_runs": report.imported,
        "top_runs": [top_json(t) for t in report.top],
    }


CSV_FIELDS = [
    "key",
    "runs",
    "supervised_runs",
    "cost_usd",
    "avg_cost_usd",
    "tokens",
    "replies",
    "unpriced_replies",
    "cost_usd_p50",
    "cost_usd_p90",
    "cost_usd_p99",
    "tokens_p50",
    "tokens_p90",
    "tokens_p99",
    "stopped_runs",
    "stop_rate",
]


def as_csv(report: Report) -> str:
    """One row per group, then `(all)`; a `stops_<reason>` column for each stop reason seen."""
    reasons = stop_reasons(report.groups)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([report.by, *CSV_FIELDS[1:], *(f"stops_{r}" for r in reasons)])
    for group in [*report.groups, report.total]:
        data = group_json(group)
        writer.writerow(
            [
                csv_cell(group.key),
                group.runs,
                group.supervised,
                f"{data['cost_usd']:.6f}",
                f"{data['avg_cost_usd']:.6f}",
                group.tokens,
                group.replies,
                group.unpriced,
                *(_num(data["cost_usd_per_run"][p], 6) for p in ("p50", "p90", "p99")),
                *(_num(group.tokens_dist[p], 0) for p in ("p50", "p90", "p99")),
                group.stopped,
                _num(group.stop_rate, 4),
                *(group.stops.get(r, 0) for r in reasons),
            ]
        )
    return out.getvalue()


def _num(value: float | None, digits: int) -> str:
    if value is None:
        return ""
    return f"{value:.{digits}f}" if digits else str(int(value))
