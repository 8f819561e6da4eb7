"""Where each cap of a run came from, in words a user can act on: a flag, a config file, the team file, a default.

`capguard show` and `--dry-run` print them; a run keeps them in its ledger row and report.
"""

from __future__ import annotations

from capguard.config.settings import Settings

CAP_KEYS = ("usd", "tokens", "wall", "steps", "map_tokens", "stuck", "warn_at", "unpriced")
_KIND_WORDS = {"team": "team file", "user": "config file", "repo": "repo file"}


def describe(origin: str, settings: Settings) -> str:
    """`--usd` -> `flag --usd`; a file's path -> `config file PATH` (or team/repo file); others as they are."""
    if origin.startswith("--"):
        return f"flag {origin}"
    if origin == "default" or origin.startswith("environment "):
        return origin
    path = origin.partition(" [agents.")[0]  # "PATH [agents.aider]": the agent's table in that file
    kind = next((layer.kind for layer in settings.layers if str(layer.path) == path), "user")
    return f"{_KIND_WORDS.get(kind, 'config file')} {origin}"


def cap_origins(settings: Settings, user: str | None = None) -> dict[str, str]:
    """Each cap's origin, and the monthly cap's (the team file that set the budgets `user` is charged to)."""
    found = {key: describe(settings.origin(key), settings) for key in CAP_KEYS}
    team = settings.team
    if user is not None:
        budgets = team.budgets(user, settings.charge.line)
        files = dict.fromkeys(
            team.origins.get("monthly_usd" if scope == "user" and name not in team.users else f"{scope}s.{name}", "")
            for scope, name, _ in budgets
        )
        files.pop("", None)
        if files:
            found["monthly"] = ", ".join(describe(path, settings) for path in files)
    return found
