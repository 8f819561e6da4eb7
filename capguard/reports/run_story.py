"""The story of one run (`capguard show RUN_ID`): who ran what, under which caps and why, every reply with the running
total, how it ended. `story` and `text` are pure (the ledger's rows and the run's JSON report in, a dict and text
out); `load` reads them.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from capguard.core.errors import ConfigError
from capguard.core.redact import mask_dsn
from capguard.core.sanitize import printable
from capguard.core.units import format_count, format_duration, format_tokens, format_usd
from capguard.ledger import Ledger
from capguard.reports.dry_run import cap_lines, wrap
from capguard.reports.query import runs_by_prefix
from capguard.reports.render import WIDTH, table

# the caps as a run stores them (Caps.as_json) -> the name a user knows and the key of its origin
_CAPS = (
    ("usd", "usd", "usd"),
    ("tokens", "tokens", "tokens"),
    ("wall", "wall_s", "wall"),
    ("steps", "steps", "steps"),
    ("map_tokens", "map_tokens", "map_tokens"),
    ("stuck", "stuck", "stuck"),
    ("warn_at", "warn_at", "warn_at"),
    ("unpriced", "unpriced", "unpriced"),
    ("monthly", "monthly_remaining_usd", "monthly"),
)


def _seconds(started: str | None, ended: str | None) -> float | None:
    if not started or not ended:
        return None
    try:
        return (
            datetime.fromisoformat(ended.replace("Z", "+00:00"))
            - datetime.fromisoformat(started.replace("Z", "+00:00"))
        ).total_seconds()
    except ValueError:
        return None


def replies(usage: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The usage rows in order with a reply number and the running total; a later, larger line of a reply
    already counted (key `K+n`: Claude's streaming updates) is numbered `N+` after the reply it adds to."""
    numbers: dict[str, int] = {}
    total, out = 0, []
    for row in usage:
        base, plus, _ = str(row["dedupe_key"]).partition("+")
        if not plus:
            numbers[base] = len(numbers) + 1
        cost = row["cost_micro_usd"]
        total += cost or 0
        tokens = sum(
            int(row[k] or 0) for k in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")
        )
        out.append(
            {
                "reply": f"{numbers.get(base, '?')}{'+' if plus else ''}",
                "occurred_utc": row["occurred_utc"],
                "model": row["model"],
                "input_tokens": row["input_tokens"],
                "output_tokens": row["output_tokens"],
                "cache_read_tokens": row["cache_read_tokens"],
                "cache_write_tokens": row["cache_write_tokens"],
                "tokens": tokens,
                "cost_usd": None if cost is None else cost / 1e6,
                "total_usd": total / 1e6,
                "priced_by": row.get("priced_by"),
            }
        )
    return out


def story(
    run: dict[str, Any], usage: list[dict[str, Any]], report: dict[str, Any] | None, report_path: str | None
) -> dict[str, Any]:
    """One run as data: the ledger's row, its usage rows and its report (the ledger's, else the run dir's)."""
    report = report or {}
    caps = run.get("caps") or report.get("caps") or {}
    origins = caps.get("origins") or report.get("cap_origins") or {}
    rows = replies(usage)
    elapsed = report.get("elapsed_s")
    return {
        "run_id": run["id"],
        "agent": run["agent"],
        "status": run["status"],
        "argv": run["argv"],  # redacted when it was stored
        "cwd": run["cwd"],
        "user": run["user"],
        "host": run["host"],
        "line": run["line"],
        "project": run["project"],
        "started_utc": run["started_utc"],
        "ended_utc": run["ended_utc"],
        "elapsed_s": elapsed if elapsed is not None else _seconds(run["started_utc"], run["ended_utc"]),
        "exit_code": run["exit_code"],
        "caps": {
            name: {"value": caps.get(stored), "origin": origins.get(origin)}
            for name, stored, origin in _CAPS
            if stored in caps or origin in origins
        },
        "replies": rows,
        "cost_usd": (rows[-1]["total_usd"] if rows else 0.0),
        "tokens": sum(r["tokens"] for r in rows),
        "reply_count": sum(1 for r in rows if not r["reply"].endswith("+")),
        "unpriced_replies": sum(1 for r in rows if r["cost_usd"] is None),
        "stop": {
            "reason": run["stop_reason"],
            "detail": report.get("stop_detail"),
            "signal_received": report.get("signal_received"),
            "steps": report.get("stop_steps", []),
            "tree_stop": report.get("tree_stop"),
            "at_stop": report.get("at_stop"),
            "leftovers_stopped": report.get("leftovers_stopped"),
        },
        "warnings": report.get("warnings", []),
        "notes": report.get("notes", []),
        "blind_spots": report.get("blind_spots", []),
        "report_file": report_path,
    }


def _when(utc: str | None) -> str:
    return "-" if not utc else utc[:19].replace("T", " ") + " UTC"


def _ended(data: dict[str, Any]) -> str:
    status, reason = data["status"], data["stop"]["reason"]
    if reason:
        return f"stopped by the {reason} cap"
    if data["stop"]["signal_received"]:
        return f"stopped: capguard got signal {data['stop']['signal_received']}"
    return {"running": "still running (or its capguard was killed)", "exited": "the agent exited"}.get(status, status)


def _bullets(title: str, items: list[str]) -> list[str]:
    if not items:
        return []
    lines = ["", title]
    for item in items:
        lines += wrap(item, "  - ", "    ")
    return lines


def text(data: dict[str, Any]) -> list[str]:
    """The story in an 80-column terminal; every name from outside escaped (by `table` or `printable`)."""
    argv = " ".join(data["argv"] or [])
    who = f"{data['user']}" + (f" (line {data['line']})" if data["line"] else "") + f" on {data['host']}"
    lines = [printable(f"run {data['run_id']}: {data['agent']}, {_ended(data)}")]
    lines += wrap(argv, "argv     ", " " * 9)  # a path stays whole, to copy
    lines += [
        *wrap(who, "user     ", " " * 9),
        *wrap(str(data["cwd"]), "cwd      ", " " * 9),
        f"started  {_when(data['started_utc'])}",
        f"ended    {_when(data['ended_utc'])}"
        + (f" ({format_duration(data['elapsed_s'])})" if data["elapsed_s"] is not None else ""),
        f"exit     {'-' if data['exit_code'] is None else data['exit_code']}",
        "",
        "Caps",
    ]
    if data["caps"]:
        lines += cap_lines(data["caps"])
    else:
        lines.append("  none recorded")
    lines += [
        "",
        f"Replies: {format_count(data['reply_count'], 'reply', 'replies')}, {format_tokens(data['tokens'])} tokens, {format_usd(round(data['cost_usd'] * 1e6))}",
    ]
    if data["replies"]:
        rows = [
            [
                r["reply"],
                str(r["occurred_utc"])[11:19],
                r["model"] or "-",
                format_tokens(r["input_tokens"]),
                format_tokens(r["output_tokens"]),
                format_tokens(r["cache_read_tokens"] + r["cache_write_tokens"]),
                "unpriced" if r["cost_usd"] is None else format_usd(round(r["cost_usd"] * 1e6)),
                format_usd(round(r["total_usd"] * 1e6)),
            ]
            for r in data["replies"]
        ]
        lines += [
            "  " + line
            for line in table(
                ["#", "TIME", "MODEL", "IN", "OUT", "CACHE", "COST", "TOTAL"],
                rows,
                flex=2,
                width=WIDTH - 2,
                left=(0, 1),
            )
        ]
    stop = data["stop"]
    if stop["reason"] or stop["signal_received"] or stop["steps"]:
        lines += ["", "Stop"]
        if stop["detail"]:
            lines += wrap(str(stop["detail"]), "  why: ", "    ")
        for step in stop["steps"]:
            lines += wrap(step, "  ", "    ")
        if stop["tree_stop"]:
            lines.append(f"  tree stopped by: {stop['tree_stop']}")
    lines += _bullets("Warnings (caps past the soft threshold)", [str(w) for w in data["warnings"]])
    lines += _bullets("Notes", data["notes"])
    lines += _bullets("Blind spots", data["blind_spots"])
    if data["report_file"]:
        lines += ["", *wrap(str(data["report_file"]), "report ", "  ")]
    return lines


def resolve(ledger: Ledger, prefix: str) -> str:
    """The one run whose id starts with `prefix`; ConfigError naming the candidates, or saying there is none."""
    prefix = prefix.strip()
    if not prefix:
        raise ConfigError("give a run id (or the start of one)")
    found = runs_by_prefix(ledger, prefix)
    if not found:
        raise ConfigError(f"no run {printable(prefix)!s} in ledger {mask_dsn(ledger.path_or_url)}")
    if len(found) > 1:
        shown = ", ".join(found[:10]) + (", ..." if len(found) > 10 else "")
        raise ConfigError(
            f"run id {printable(prefix)} matches {'more than 10' if len(found) > 10 else len(found)} runs: {shown}; give more of it"
        )
    return found[0]


def load(ledger: Ledger, prefix: str, runs_dir: Path) -> dict[str, Any]:
    """The story of the run `prefix` names: the ledger's rows, and its report (the ledger's, else the run dir's)."""
    run_id = resolve(ledger, prefix)
    run = ledger.run(run_id)
    if run is None:  # pruned between the two reads
        raise ConfigError(f"no run {run_id} in ledger {mask_dsn(ledger.path_or_url)}")
    path = runs_dir / run_id / "report.json"
    report = run.get("report")
    if path.is_file():
        try:
            from_file = json.loads(path.read_text())
        except (OSError, ValueError):
            from_file = None
        if not isinstance(report, dict) and isinstance(from_file, dict):
            report = from_file
    return story(
        run, ledger.usage(run_id), report if isinstance(report, dict) else None, str(path) if path.is_file() else None
    )
