"""`capguard config [AGENT] [--json]`: the effective settings, the layer each came from, which layers are
trusted, which keys the team config locked and what was ignored."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from capguard import paths
from capguard.cli.options import Flags
from capguard.config import identity
from capguard.config.settings import AGENTS, KEYS, LIBRARY, Layer, Settings, load_settings
from capguard.core.pricing import with_cache_defaults
from capguard.core.redact import mask_dsn
from capguard.core.units import format_duration, format_tokens, format_usd

_SHOW = {
    "usd": lambda v: format_usd(v),
    "tokens": lambda v: f"{v:,}" if v < 10_000 else format_tokens(v),
    "map_tokens": lambda v: f"{v:,}",
    "wall": format_duration,
    "grace": format_duration,
    "kill_after": format_duration,
    "warn_at": lambda v: f"{v:.0%}",
    "ledger": mask_dsn,  # a postgresql:// URL may carry a password: never printed
}


def show(key: str, value: object) -> str:
    if value is None:
        return "off" if key in ("usd", "tokens", "wall", "steps", "map_tokens") else "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return " ".join(value) or "-"
    return _SHOW.get(key, str)(value)


def in_force(settings: Settings) -> dict[str, tuple[object, str]]:
    """Each key's value and origin, with `ledger` and `user` as a run would resolve them when no layer set them:
    the default file under the data dir, and the identity from git or the login."""
    shown = {key: (value.value, value.origin) for key, value in settings.provenance.items()}
    if settings.charge.ledger is None:
        shown["ledger"] = (str(paths.default_ledger_path()), f"default ({_data_dir_origin()})")
    if settings.charge.user is None:
        name, source = identity.resolve_user(Path.cwd())
        shown["user"] = (name, source)
    return shown


def _data_dir_origin() -> str:
    for name in ("CAPGUARD_HOME", "XDG_DATA_HOME"):
        if os.environ.get(name):
            return f"data dir from {name}"
    return "data dir ~/.local/share/capguard"


def as_json(settings: Settings) -> dict:
    return {
        "agent": settings.agent,
        "files": [str(f) for f in settings.files],
        "layers": [
            {"path": str(layer.path), "kind": layer.kind, "trusted": layer.trusted} for layer in settings.layers
        ],
        "locks": sorted(settings.locks),
        "locked_by": settings.lock_origin,
        "ignored": [{"source": i.source, "keys": list(i.keys), "why": i.why} for i in settings.ignored],
        "values": {
            k: {
                "value": mask_dsn(value) if k == "ledger" and isinstance(value, str) else value,
                "origin": origin,
                "locked": k in settings.locks,
            }
            for k, (value, origin) in in_force(settings).items()
        },
        "prices": {
            m: {k: _rate(v) for k, v in vars(with_cache_defaults(m, p)).items()} for m, p in settings.prices.items()
        },
        "team": _team_json(settings),
    }


def _rate(value: object) -> str:
    """A rate per million tokens without a default multiple's trailing zeros (0.1 x 3 is 0.30)."""
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _usd(micro: int | None) -> float | None:
    return None if micro is None else micro / 1_000_000


def _team_json(settings: Settings) -> dict:
    team = settings.team
    user = identity.user(Path.cwd(), settings.charge.user)
    return {
        "monthly_usd": _usd(team.monthly_usd),
        "monthly_warn_at": team.warn_at,
        "timezone": team.timezone,
        "users": {name: _usd(cap) for name, cap in team.users.items()},
        "lines": {name: _usd(cap) for name, cap in team.lines.items()},
        "origins": dict(team.origins),
        "charged_to": {"user": user, "line": settings.charge.line},
        "monthly_caps": [
            {"scope": scope, "name": name, "cap_usd": _usd(cap)}
            for scope, name, cap in team.budgets(user, settings.charge.line)
        ],
    }


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="capguard config", description="Show the effective settings and where each comes from."
    )
    parser.add_argument(
        "agent",
        nargs="?",
        choices=(*AGENTS, LIBRARY),
        help="include the [agents.AGENT] section (anthropic-sdk: the library's Budget tasks)",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def run(ns: argparse.Namespace, flags: Flags) -> int:
    settings = load_settings(ns.agent, flags=flags)
    if ns.json:
        print(json.dumps(as_json(settings), indent=2, default=str))
        return 0
    print(f"capguard config{' for ' + ns.agent if ns.agent else ''}")
    print("files: " + (", ".join(str(f) for f in settings.files) or "none (defaults only)"))
    for layer in settings.layers:
        print(f"  {layer.kind} file {layer.path}: {_trust_word(layer, settings)}")
    for item in settings.ignored:
        print(f"  ignored {', '.join(item.keys)} from {item.source} ({item.why})")
    width = max(len(k) for k in KEYS)
    for key, (value, origin) in in_force(settings).items():
        print(f"  {key:<{width}}  {show(key, value):<14}  {origin}" + ("  (locked)" if key in settings.locks else ""))
    _show_team(settings)
    if ns.agent == "claude":
        _show_claude(settings)
    for model, given in settings.prices.items():
        price = with_cache_defaults(model, given)  # what a run charges: unset cache rates at the usual multiples
        print(
            f"  price {model}: input ${price.input}/M, output ${price.output}/M, cache read ${_rate(price.cache_read)}/M,"
            f" cache write ${_rate(price.cache_write)}/M (1 h ${_rate(price.cache_write_1h)}/M)"
        )
    return 0


def _trust_word(layer: Layer, settings: Settings) -> str:
    if layer.kind == "team":
        return "trusted, locks " + (", ".join(sorted(settings.locks)) or "nothing")
    if layer.trusted:
        return "trusted" + (" (capguard untrust to undo)" if layer.kind == "repo" else "")
    return f"untrusted: may only tighten caps (capguard trust {layer.path})"


def _show_claude(settings: Settings) -> None:
    """What Claude Code itself will be given (interactive; and in -p mode)."""
    from capguard.agents.claude.adapter import native_settings

    env, flags = native_settings(settings, [], os.environ)
    _, print_flags = native_settings(settings, ["-p"], os.environ)
    extra = [f for f in print_flags if f not in flags] if flags else print_flags
    given = [f"{k}={v}" for k, v in env.items()] + flags
    print(
        "  claude gets: "
        + (" ".join(given) or "nothing extra")
        + ("; in -p mode also " + " ".join(extra) if extra else "")
    )


def _show_team(settings: Settings) -> None:
    """The [team] table (monthly caps) and which of its caps a run from here is charged to."""
    team = settings.team
    if not team.origins:
        return
    origin = team.origins.get
    print(
        f"  team: monthly_usd {show('usd', team.monthly_usd)} ({origin('monthly_usd', 'default')}),"
        f" monthly_warn_at {team.warn_at:.0%} ({origin('monthly_warn_at', 'default')}),"
        f" timezone {team.timezone} ({origin('timezone', 'default')})"
    )
    for kind, caps in (("users", team.users), ("lines", team.lines)):
        for name, cap in caps.items():
            print(f"  team.{kind}.{name}: monthly_usd {show('usd', cap)}  {origin(f'{kind}.{name}')}")
    user, line = identity.user(Path.cwd(), settings.charge.user), settings.charge.line
    applied = [f"{name} {show('usd', cap)}" for _, name, cap in team.budgets(user, line)]
    print(f"  monthly caps for {user}" + (f" on line {line}" if line else "") + ": " + (", ".join(applied) or "none"))
