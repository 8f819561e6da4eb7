"""What a run would be (`capguard --dry-run` / `capguard explain`), as text for an 80-column terminal.

Pure: the plan as data in, lines out; every name from outside escaped.
"""

from __future__ import annotations

import textwrap
from typing import Any

from capguard.core.sanitize import printable
from capguard.core.units import format_duration, format_tokens, format_usd

# a cap's name in config -> its field in Caps.as_json
CAP_FIELDS = (
    ("usd", "usd"),
    ("tokens", "tokens"),
    ("wall", "wall_s"),
    ("steps", "steps"),
    ("map_tokens", "map_tokens"),
    ("stuck", "stuck"),
    ("warn_at", "warn_at"),
    ("unpriced", "unpriced"),
    ("monthly", "monthly_remaining_usd"),
)
WIDTH = 80


def cap_value(name: str, value: Any) -> str:
    if value is None:
        return "off" if name not in ("stuck", "warn_at", "unpriced") else "-"
    if name in ("usd", "monthly"):
        return format_usd(round(value * 1e6)) + (" left" if name == "monthly" else "")
    if name == "wall":
        return format_duration(value)
    if name in ("tokens", "map_tokens"):
        return format_tokens(value)
    if name == "warn_at":
        return f"{value:.0%}"
    return str(value)


def cap_lines(caps: dict[str, dict[str, Any]]) -> list[str]:
    """`  usd        $5.00  flag --usd`: the origin wraps (a config file's path is worth reading whole)."""
    values = {name: cap_value(name, cap["value"]) for name, cap in caps.items()}
    width = max((len(v) for v in values.values()), default=0)
    lines = []
    for name, cap in caps.items():
        origin = cap["origin"] or ("-" if cap["value"] is None else "not recorded")
        head = f"  {name:<10}  {values[name]:>{width}}  "
        lines += wrap(origin, head, " " * len(head))
    return lines


def wrap(text: str, first: str, rest: str) -> list[str]:
    """`text` in lines of 80 columns, but a path or a word longer than that stays whole (to copy and paste)."""
    return textwrap.wrap(
        printable(text),
        WIDTH,
        initial_indent=first,
        subsequent_indent=rest,
        break_on_hyphens=False,
        break_long_words=False,
    ) or [first.rstrip()]


def text(plan: dict[str, Any]) -> list[str]:
    lines = [f"capguard would run {plan['agent']} (a dry run: nothing starts, the ledger is not written)", ""]
    lines += ["Command line (secrets masked)"]
    lines += wrap(" ".join(plan["argv"]), "  ", "    ")
    lines += ["", "Environment capguard adds or changes (secrets masked)"]
    for change in plan["env"] or []:
        if change["change"] == "removed":
            lines += wrap(f"{change['name']} removed: capguard's secret, never the agent's", "  - ", "    ")
        else:
            lines += wrap(f"{change['name']}={change['value']} ({change['change']})", "  ", "    ")
    if not plan["env"]:
        lines.append("  nothing: the agent gets your environment as it is")
    lines += ["", "Caps", *cap_lines(plan["caps"])]
    meter = plan["meter"]
    proxy = meter.get("proxy")
    if proxy is not None:
        lines += ["", f"Meter: capguard's metering proxy on 127.0.0.1 (strict mode, {meter['origin']})"]
        for front in proxy["fronts"]:
            names = ", ".join(front["variables"])
            how = (
                f"its command line names the proxy, {names} its secret (sent as {front['header']})"
                if front.get("header")
                else f"{names or 'its config'} = the proxy"
            )
            lines += wrap(f"{front['provider']}: {how}, which forwards to {front['upstream']}", "  ", "    ")
        for kind in ("allow", "deny"):
            if proxy[kind]:
                lines += wrap(f"[models] {kind}: {', '.join(proxy[kind])}", "  ", "    ")
        lines += ["  the agent's files, only to calibrate:"]
    else:
        lines += ["", "Meter: the files it watches"]
    lines += [line for path in meter["files"] for line in wrap(path, "  ", "    ")]
    if meter["model"]:
        priced = "priced" if meter["model_priced"] else "no known price"
        lines += wrap(f"model {meter['model']} ({priced})", "  ", "    ")
    lines += wrap(
        f"a stop: {', then '.join(meter['polite_stop'])}, then SIGTERM and SIGKILL; the tree by {meter['tree_stop']}",
        "  ",
        "    ",
    )
    for title, items in (("Notes", meter["notes"]), ("Blind spots", meter["blind_spots"])):
        if items:
            lines += ["", title, *(line for item in items for line in wrap(item, "  - ", "    "))]
    ledger = plan["ledger"]
    exists = {True: "", False: " (not created yet: the run creates it)", None: ""}[ledger["exists"]]
    lines += ["", "Ledger", *wrap(f"{ledger['target']}{exists} ({ledger['origin']})", "  ", "    ")]
    lines += wrap(f"charged to {plan['user']}" + (f" on line {plan['line']}" if plan["line"] else ""), "  ", "    ")
    month = plan["month"]
    lines += ["", "Month"]
    lines += [line for item in month["lines"] for line in wrap(item, "  ", "    ")] or ["  no monthly cap applies"]
    said = plan["start_notes"] + (
        [f"capguard would refuse to start: {plan['would_refuse']}"] if plan["would_refuse"] else []
    )
    if said:
        lines += ["", "At start", *(line for item in said for line in wrap(item, "  ", "    "))]
    return lines
