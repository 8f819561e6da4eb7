"""Which values make a run stricter: all an untrusted repo file may set, and all a team-locked key may become.

Pure: a value a layer offers is compared with the value in force from the layers below it.
"""

from __future__ import annotations

from typing import Any

from capguard.core.caps import UNPRICED_POLICIES
from capguard.core.team import TeamConfig

# Lower is stricter; None ("off") is the loosest of all. Claude Code's max_output_tokens and task_budget count too.
CAPS = frozenset({"usd", "tokens", "wall", "steps", "map_tokens", "stuck", "max_output_tokens", "task_budget"})
# Lower is stricter: warn earlier, stop sooner.
SHORTER = frozenset({"warn_at", "grace", "kill_after"})
# UNPRICED_POLICIES runs from the strictest ("stop") to the loosest ("warn").
TIGHTENING = CAPS | SHORTER | {"unpriced", "meter", "allow", "deny"}


def cap_stricter_or_same(offered: Any, current: Any) -> bool:
    """A cap may be added or lowered, never lifted or switched off."""
    if offered == current:
        return True
    return offered is not None and (current is None or offered < current)


def stricter_or_same(key: str, offered: Any, current: Any) -> bool:
    """True when `offered` for `key` makes the run no looser than `current`; keys that are not a
    limit (command, ledger, user, ...) may only repeat the value in force."""
    if offered == current:
        return True
    if key in CAPS:
        return cap_stricter_or_same(offered, current)
    if key in SHORTER:
        return offered is not None and current is not None and offered < current
    if key == "meter":  # the proxy holds each call's worst case: stricter than reading the agent's files
        return bool(offered == "proxy")
    if key == "deny":  # refusing more models
        return set(offered) >= set(current)
    if key == "allow":  # allowing fewer (an empty list allows every model)
        return bool(offered) and (not current or set(offered) <= set(current))
    if key == "unpriced":
        return UNPRICED_POLICIES.index(offered) < UNPRICED_POLICIES.index(current)
    return False


def tighter_team(table: dict[str, Any], offered: TeamConfig, current: TeamConfig) -> tuple[dict[str, Any], list[str]]:
    """The part of a [team] table (already parsed as `offered`) that only makes monthly caps stricter than
    `current`, and the dotted names of the keys left out."""
    kept: dict[str, Any] = {}
    ignored: list[str] = []

    def keep(name: str, ok: bool, store: dict[str, Any], key: str, raw: Any) -> None:
        if ok:
            store[key] = raw
        else:
            ignored.append(name)

    if "monthly_usd" in table:
        keep(
            "team.monthly_usd",
            cap_stricter_or_same(offered.monthly_usd, current.monthly_usd),
            kept,
            "monthly_usd",
            table["monthly_usd"],
        )
    if "monthly_warn_at" in table:
        keep(
            "team.monthly_warn_at",
            offered.warn_at <= current.warn_at,
            kept,
            "monthly_warn_at",
            table["monthly_warn_at"],
        )
    if "timezone" in table:  # moving the month's boundary is no tightening
        keep("team.timezone", offered.timezone == current.timezone, kept, "timezone", table["timezone"])
    for kind, caps, now in (("users", offered.users, current.user_cap), ("lines", offered.lines, current.line_cap)):
        entries: dict[str, Any] = {}
        for name, raw in table.get(kind, {}).items():
            keep(f'team.{kind}."{name}"', cap_stricter_or_same(caps[name], now(name)), entries, name, raw)
        if entries:
            kept[kind] = entries
    return kept, ignored
