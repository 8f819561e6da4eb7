"""What capguard says once at start, before the agent takes the terminal: metering only, estimated counts, a
model nobody can price. Pure: caps and facts in, lines (or a refusal's words) out."""

from __future__ import annotations

from capguard.core.caps import Caps, usd_ceiling
from capguard.core.enums import UnpricedPolicy

NO_CAP = "capguard: no cap set: metering only (set --usd, --tokens, --wall, --steps or a config file)"


def has_cap(caps: Caps) -> bool:
    """Whether anything may stop the run's spend: a USD, token, wall-clock, steps, repo-map or monthly cap."""
    limits = (caps.usd_micro, caps.tokens, caps.wall_s, caps.steps, caps.map_tokens, caps.monthly_remaining_micro)
    return any(limit is not None for limit in limits)


def unpriced_refusal(caps: Caps, model: str | None, priced: bool, *, reports_cost: bool = False) -> str | None:
    """Why a run is refused before it starts: its named model has no price, a USD cap is set, unpriced = "stop",
    and the agent prices nothing itself (one that does, aider, may know the model: then its first reply decides)."""
    if reports_cost or not _unpriced_under_usd(caps, model, priced) or caps.unpriced is not UnpricedPolicy.STOP:
        return None
    return (
        f'{model} has no known price, so the USD cap cannot be enforced (unpriced = "stop"); add [prices."{model}"]'
        " with input and output in USD per million tokens to your config, or set --unpriced tokens-only"
    )


def start_notes(
    caps: Caps, *, model: str | None, priced: bool, estimates: str | None, reports_cost: bool = False
) -> list[str]:
    """The lines said at start (never while the agent runs): no cap at all, a cap on the agent's own estimates, a
    named model with no price under unpriced = "warn"."""
    if not has_cap(caps):
        return [NO_CAP]
    lines = []
    if estimates and (caps.tokens is not None or usd_ceiling(caps) is not None):
        lines.append(f"capguard: note: {estimates}")
    if _unpriced_under_usd(caps, model, priced) and reports_cost and caps.unpriced is UnpricedPolicy.STOP:
        lines.append(
            f"capguard: note: {model} has no price in genai-prices or your [prices]: the agent's own cost of each"
            ' reply counts, and a reply it cannot price either stops the run (unpriced = "stop")'
        )
    elif _unpriced_under_usd(caps, model, priced) and caps.unpriced is UnpricedPolicy.WARN:
        lines.append(
            f"capguard: warning: {model} has no known price: its replies count tokens, not dollars, toward the USD"
            f' cap (add [prices."{model}"] to your config)'
        )
    return lines


def _unpriced_under_usd(caps: Caps, model: str | None, priced: bool) -> bool:
    return bool(model) and not priced and usd_ceiling(caps) is not None
