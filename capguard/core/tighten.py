"""Which values make a run stricter: all an untrusted repo file may set, and all a team-locked key may become.

Pure: a value a layer offers is compared with the value in force from the layers below it.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from capguard.core.caps import UNPRICED_POLICIES
from capguard.core.model_caps import ModelRules
from capguard.core.team import TeamConfig

# Lower is stricter; None ("off") is the loosest of all. Claude Code's max_output_tokens and task_budget count too.
CAPS = frozenset({"usd", "tokens", "wall", "steps", "map_tokens", "stuck", "max_output_tokens", "task_budget"})
# Lower is stricter: warn earlier, stop sooner.
SHORTER = frozenset({"warn_at", "grace", "kill_after"})
# UNPRICED_POLICIES runs from the strictest ("stop") to the loosest ("warn").
TIGHTENING = CAPS | SHORTER | {"unpriced", "meter"}


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


def _usd_text(micro: int | None) -> str | None:
    return None if micro is None else str(Decimal(micro) / Decimal(1_000_000))


def tighter_models(table: dict[str, Any], offered: ModelRules, current: ModelRules) -> tuple[dict[str, Any], list[str]]:
    """The part of a [models] table (already parsed as `offered`) that only makes the run stricter than
    `current`: denies added to the ones in force, an allow list that names fewer models (a subset of the one
    in force, or any when none is), per-model caps added or lowered. The dotted names of the keys left out."""
    kept: dict[str, Any] = {}
    ignored: list[str] = []
    if "deny" in table:  # more refusals only: the denies in force stay
        kept["deny"] = [*current.deny, *(p for p in offered.deny if p not in current.deny)]
    if "allow" in table:
        if offered.allow and (not current.allow or set(offered.allow) <= set(current.allow)):
            kept["allow"] = list(offered.allow)
        else:
            ignored.append("models.allow")
    now = {cap.pattern: cap for cap in current.caps}
    for cap in offered.caps:
        before = now.get(cap.pattern)
        entry: dict[str, Any] = {}
        for key, mine, theirs, text in (
            ("usd", cap.usd_micro, before.usd_micro if before else None, _usd_text),
            ("tokens", cap.tokens, before.tokens if before else None, lambda v: v),
        ):
            if key in table[cap.pattern] and cap_stricter_or_same(mine, theirs):
                value = mine
            else:
                if key in table[cap.pattern]:
                    ignored.append(f'models."{cap.pattern}".{key}')
                value = theirs  # a later table replaces the glob's whole cap: keep what is in force
            if value is not None:
                entry[key] = text(value)
        if entry:
            kept[cap.pattern] = entry
    return kept, ignored
