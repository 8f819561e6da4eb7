"""A library task's caps and who it is charged to: the config ([agents.anthropic-sdk] and the rest), then what its
run row kept (a resumed task), then the arguments given to Budget, each value parsed as the CLI parses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from capguard.budget.store import caps_of
from capguard.config import identity
from capguard.config import settings as config
from capguard.core.caps import Caps
from capguard.core.errors import ConfigError
from capguard.core.task_budget import TaskBudget, check_total

# A Budget argument -> the Caps field it sets (task_budget is not a cap of Caps: it goes to the API)
CAP_FIELDS = {
    "usd": "usd_micro",
    "tokens": "tokens",
    "steps": "steps",
    "wall": "wall_s",
    "warn_at": "warn_at",
    "unpriced": "unpriced",
}


@dataclass(frozen=True)
class TaskCaps:
    caps: Caps
    task_budget: int | None  # Claude's API-side task budget, in tokens

    def new_task_budget(self) -> TaskBudget | None:
        return None if self.task_budget is None else TaskBudget(self.task_budget)


def parse_arguments(explicit: dict[str, Any]) -> dict[str, Any]:
    """Budget(usd=..., ...) as the CLI parses its flags; ValueError names the argument."""
    return {key: _parse(key, raw) for key, raw in explicit.items() if raw is not None}


def resolve(settings: config.Settings, row: dict[str, Any] | None, overrides: dict[str, Any]) -> TaskCaps:
    """The config's caps, then the run row's (a resumed task keeps its caps), then `overrides` (parsed)."""
    if row is None:
        base = {key: getattr(settings.caps, name) for key, name in CAP_FIELDS.items()}
        base["task_budget"] = configured_task_budget(settings)
    else:
        base = caps_of(row)
    values = {**base, **overrides}
    caps = Caps(stuck=None, **{name: values[key] for key, name in CAP_FIELDS.items()})
    return TaskCaps(caps, values["task_budget"])


def configured_task_budget(settings: config.Settings) -> int | None:
    """[agents.anthropic-sdk] task_budget, held to Anthropic's minimum with its file named."""
    total = settings.launch.task_budget
    if total is None:
        return None
    try:
        return check_total(total)
    except ValueError as err:
        raise ConfigError(f"{settings.origin('task_budget')}: task_budget: {err}") from None


def charged_to(
    settings: config.Settings, cwd: Path, row: dict[str, Any] | None, task_id: str, user: str | None, line: str | None
) -> tuple[str, str | None]:
    """Who the task is charged to: as a CLI run from cwd would be, unless given. A resumed task stays charged
    to whoever its run row names (the ledger counts its spend there)."""
    if row is None:
        line = settings.charge.line if line is None else line
        return user or identity.user(cwd, settings.charge.user), line or None
    for name, given in (("user", user), ("line", line)):
        if given is not None and (given or None) != row[name]:
            raise ValueError(
                f"Budget.resume({task_id!r}, {name}={given!r}): the task is charged to {name} {row[name]!r} in the ledger"
            )
    return row["user"], row["line"]


def _parse(key: str, raw: Any) -> Any:
    try:
        value = config.parse_key(key, raw)
        return check_total(value) if key == "task_budget" and value is not None else value
    except ValueError as err:
        raise ValueError(f"Budget({key}={raw!r}): {err}") from None
