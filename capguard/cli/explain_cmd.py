"""`capguard explain AGENT [AGENT ARGS...]` and `capguard --dry-run AGENT ...`: what a run would be, without it.

The agent's argv and the environment capguard gives it, each cap and where it came from, the files the meter
would watch, the ledger and the month's standing. Nothing starts, and nothing is written to the ledger.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from capguard import paths
from capguard.agents import NAMES as AGENTS
from capguard.agents import get_adapter
from capguard.agents.base import Front
from capguard.cli.options import Flags
from capguard.config import identity
from capguard.config.origins import cap_origins
from capguard.config.settings import Settings, load_settings
from capguard.core import child_env, monthly
from capguard.core.pricing import Pricer
from capguard.core.redact import mask_dsn, redact_argv, redact_env_value
from capguard.metering.proxy.server import HEADER_SLOT
from capguard.reports import dry_run
from capguard.reports.start_notes import start_notes, unpriced_refusal
from capguard.supervisor.strict import model_refusal, shown_url

EPILOG = """\
The same as `capguard [OPTIONS] --dry-run AGENT [AGENT ARGS...]`. Everything after AGENT is the agent's.

examples:
  capguard explain aider --model sonnet src/app.py
  capguard --usd 5 explain claude --json
  capguard --usd 5 --dry-run aider --model sonnet
"""
RUN_ID = "<run-id>"  # a run's id and directory are made when it starts
PORT = "<port>"  # a receiver's port is chosen when the run starts
SECRET = "<secret>"  # the proxy's per-run secret, in its base URL's path: made at start, never shown


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="capguard explain",
        description="What `capguard AGENT ...` would run, and why, without running it: the agent's command "
        "line and environment, each cap and where it came from, the files metered, the ledger, the month.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--json", action="store_true", help="machine-readable JSON")
    p.add_argument("agent", choices=AGENTS, metavar="AGENT", help=f"one of {', '.join(AGENTS)}")
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="AGENT ARGS", help="the agent's own arguments")
    return p


def run(ns: argparse.Namespace, flags: Flags) -> int:
    return explain(ns.agent, ns.args, load_settings(ns.agent, flags=flags), as_json=ns.json)


def explain(agent: str, args: list[str], settings: Settings, *, as_json: bool = False) -> int:
    data = plan_of(agent, args, settings, os.environ, Path.cwd())
    print(json.dumps(data, indent=2) if as_json else "\n".join(dry_run.text(data)))
    return 0


def env_changes(before: Mapping[str, str], after: Mapping[str, str]) -> list[dict[str, str | None]]:
    """What the agent's environment has that ours has not, or differently, or lacks: values of secrets masked."""
    changes: list[dict[str, str | None]] = []
    for name in sorted(set(before) | set(after)):
        if name in after and before.get(name) != after[name]:
            how = "added" if name not in before else "changed"
            changes.append({"name": name, "change": how, "value": redact_env_value(name, after[name])})
        elif name not in after:
            changes.append({"name": name, "change": "removed", "value": None})
    return changes


def plan_of(agent: str, args: list[str], settings: Settings, env: Mapping[str, str], cwd: Path) -> dict[str, Any]:
    """The run `capguard AGENT ARGS` would start, as data. The adapter plans into a scratch directory, removed
    afterwards and shown as the run's own (`runs/<run-id>`); its services (Claude's telemetry receiver) are closed."""
    caps = settings.caps
    user, line = identity.user(cwd, settings.charge.user), settings.charge.line
    team = settings.team
    with tempfile.TemporaryDirectory(prefix="capguard-dry-run-") as scratch:
        plan = get_adapter(agent).plan(list(args), settings, Path(scratch), dict(env), "dry-run")
        endpoints = [service.endpoint for service in plan.services if hasattr(service, "endpoint")]
        for service in plan.services:
            service.stop()  # bound at construction, never started
        run_dir = str(paths.runs_dir() / RUN_ID)

        def shown(text: str) -> str:
            for endpoint in endpoints:
                text = text.replace(endpoint, endpoint.rsplit(":", 1)[0] + ":" + PORT)
            return text.replace(scratch, run_dir)

        argv_told: list[str] = list(plan.argv)
        env_told: dict[str, str] = {}
        if settings.supervise.meter == "proxy" and plan.on_proxy is not None and plan.fronts:
            argv_told, env_told = plan.on_proxy({front.mount: _front_url(front) for front in plan.fronts})
        argv = [shown(arg) for arg in redact_argv(argv_told)]
        changes = [
            {**c, "value": None if c["value"] is None else shown(c["value"])}
            for c in env_changes(env, child_env.for_agent(plan.env))
        ]
        watched = [shown(str(w.path)) + (f"/{w.glob}" if w.glob else "") for w in plan.watches]
        trees = [shown(str(tree)) for tree in plan.watch_trees]
    priced = Pricer(settings.prices, fallback_model=plan.fallback_model).can_price(plan.named_model)
    month = _month(settings, team, user, line)
    if month.get("remaining_usd") is not None:
        from dataclasses import replace

        caps = replace(caps, monthly_remaining_micro=round(month["remaining_usd"] * 1e6))
    origins = cap_origins(settings, user if team.budgets(user, line) else None)
    values = caps.as_json()
    refusal = unpriced_refusal(caps, plan.named_model, priced, reports_cost=plan.reports_cost)
    proxy = _proxy(agent, plan.fronts, plan.named_model, settings) if settings.supervise.meter == "proxy" else None
    if proxy is not None:
        refusal = refusal or proxy.pop("refusal")
        urls = {name: url for front in proxy["fronts"] for name, url in front["variables"].items()}
        urls.update(env_told)  # an agent told the proxy's URL in a config value (OpenCode's)
        changes = [c for c in changes if c["name"] not in urls] + [
            {"name": name, "change": "changed" if name in env else "added", "value": url} for name, url in urls.items()
        ]
        changes.sort(key=lambda change: str(change["name"]))
    return {
        "agent": agent,
        "argv": argv,
        "env": changes,
        "caps": {
            name: {"value": values[stored], "origin": origins.get(name)}
            for name, stored in dry_run.CAP_FIELDS
            if name != "monthly" or name in origins
        },
        "meter": {
            "kind": settings.supervise.meter,
            "origin": settings.origin("meter"),
            "proxy": proxy,
            "files": watched,
            "folders": trees,
            "model": plan.named_model or plan.fallback_model,
            "model_priced": priced if (plan.named_model or plan.fallback_model) else None,
            "polite_stop": [sig.name for sig, _ in plan.polite_stop],
            "tree_stop": _tree_way(),
            "notes": plan.notes,
            "blind_spots": plan.blind_spots,
        },
        "ledger": _ledger(settings),
        "user": user,
        "line": line,
        "month": month,
        "start_notes": []
        if settings.output.quiet
        else start_notes(
            caps, model=plan.named_model, priced=priced, estimates=plan.estimates, reports_cost=plan.reports_cost
        ),
        "would_refuse": month.get("refusal") or refusal,
    }


def _proxy(agent: str, fronts: list[Front] | None, model: str | None, settings: Settings) -> dict[str, Any]:
    """Strict mode: the providers the metering proxy would front, the base-URL variables the agent would get
    (the per-run secret masked) and the upstream each goes on to; `refusal` when strict mode would not start."""
    why = None
    if not fronts:
        why = f"capguard --strict cannot meter {agent} yet (its providers are not fronted by the proxy)"
    elif (denied := model_refusal(model, settings.models)) is not None:
        why = f"{agent} not started: {denied}"
    return {
        "fronts": [
            {
                "provider": front.mount,
                "variables": {
                    **{name: _front_url(front) for name in front.env},
                    **({front.secret_env: SECRET} if front.header and front.secret_env else {}),
                },
                "upstream": shown_url(front.upstream),
                **({"header": front.header} if front.header else {}),
            }
            for front in fronts or []
        ],
        "allow": list(settings.models.allow),
        "deny": list(settings.models.deny),
        "refusal": why,
    }


def _tree_way() -> str:
    from capguard.supervisor import cgroup, proctree

    if cgroup.parent_dir() is not None:
        return "cgroup (if the agent can join it; else freeze-sweep)"
    return "freeze-sweep" if proctree.can_walk() else "sweep"


def _ledger_path(settings: Settings) -> Path | None:
    """The SQLite file the ledger is, or None for PostgreSQL."""
    target = settings.charge.ledger
    if target is None:
        return paths.default_ledger_path()
    return None if target.startswith(("postgresql://", "postgres://")) else Path(target).expanduser()


def _ledger(settings: Settings) -> dict[str, Any]:
    path = _ledger_path(settings)
    target = str(path) if path is not None else (settings.charge.ledger or "")
    return {
        "target": mask_dsn(target),
        "origin": settings.origin("ledger") if settings.charge.ledger is not None else "default",
        "exists": None if path is None else path.is_file(),
    }


def _month(settings: Settings, team: Any, user: str, line: str | None) -> dict[str, Any]:
    """This month's standing of the budgets the run would be charged to, read without writing to the ledger (no
    spool replayed; a ledger that does not exist yet is not created)."""
    if not team.budgets(user, line):
        return {"standings": [], "lines": []}
    path = _ledger_path(settings)
    if path is not None and not path.is_file():
        return {"standings": [], "lines": ["no ledger yet: nothing spent this month"]}
    from capguard.budget.allowance import MonthGuard
    from capguard.ledger import open_ledger

    with open_ledger(settings.charge.ledger) as ledger:
        opening = MonthGuard(ledger, team, user, line).opening()
    return {
        "standings": monthly.as_json(opening.standings),
        "lines": monthly.status_lines(opening.standings),
        "refusal": opening.refusal,
        "remaining_usd": None if opening.remaining is None else opening.remaining / 1e6,
    }


def _front_url(front: Front) -> str:
    """The proxy's URL for a front as the agent would get it (the secret masked; none where it goes in a header)."""
    return f"http://127.0.0.1:{PORT}/{HEADER_SLOT if front.header else SECRET}/{front.mount}"
