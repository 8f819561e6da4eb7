"""`capguard demo`: the real aider against a scripted local model, stopped by a small USD cap.

Offline and free: the model is a fake server on 127.0.0.1 whose edits never apply, so aider keeps
retrying — a runaway loop in miniature — until capguard stops it and says why.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from capguard.agents.aider.adapter import INSTALL_HINT
from capguard.agents.base import resolve_executable
from capguard.cli.options import Flags
from capguard.config.settings import load_settings
from capguard.core.caps import EXIT_CODES
from capguard.core.enums import StopReason
from capguard.demo.fake_openai import FakeOpenAI, runaway_script
from capguard.run import run_agent

REPLY_TOKENS = (50_000, 2_000)  # gpt-4o prices this at $0.145 a reply


def aider_demo_args(base_url: str) -> list[str]:
    """Flags for a quiet, offline, non-interactive aider against the fake server."""
    return [
        "--model",
        "openai/gpt-4o",
        "--openai-api-base",
        base_url,
        "--openai-api-key",
        "sk-capguard-demo",
        "--no-stream",
        "--no-check-update",
        "--no-show-release-notes",
        "--analytics-disable",
        "--yes-always",
        "--no-gitignore",
        "--no-auto-commits",
        "--no-show-model-warnings",
        "--message",
        "Please fix the greeting in hello.py",
        "hello.py",
    ]


def make_repo(root: Path) -> Path:
    repo = root / "repo"
    repo.mkdir()
    (repo / "hello.py").write_text('def greet():\n    return "helo"\n')
    git = ["git", "-c", "user.name=capguard demo", "-c", "user.email=demo@capguard.invalid"]
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run([*git, "add", "hello.py"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "demo"], cwd=repo, check=True)
    return repo


def seed_price_cache(home: Path, aider: str) -> None:
    """Give aider litellm's bundled price list, so it does not try (and, offline, fail) to download it."""
    with open(aider, "rb") as handle:
        shebang = handle.read(300).split(b"\n")[0]
    python = Path(shebang[2:].decode(errors="replace").strip()) if shebang.startswith(b"#!") else Path(sys.executable)
    found = sorted(
        python.parent.parent.glob("lib/python*/site-packages/litellm/model_prices_and_context_window_backup.json")
    )
    if found:
        cache = home / ".aider" / "caches"
        cache.mkdir(parents=True, exist_ok=True)
        shutil.copy(found[0], cache / "model_prices_and_context_window.json")


def agent_env(home: Path) -> dict[str, str]:
    """aider with its own throwaway HOME, and litellm kept offline (no price-list download)."""
    env = dict(os.environ)
    env.update(
        HOME=str(home),
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        GIT_AUTHOR_NAME="capguard demo",
        GIT_AUTHOR_EMAIL="demo@capguard.invalid",
        GIT_COMMITTER_NAME="capguard demo",
        GIT_COMMITTER_EMAIL="demo@capguard.invalid",
    )
    return env


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="capguard demo",
        description="Run the real aider against a local scripted model under a small USD cap (offline, free).",
    )
    parser.add_argument("--keep", action="store_true", help="keep the demo's repo, ledger and report")
    return parser


def run(ns: argparse.Namespace, flags: Flags) -> int:
    flags = {**flags, "usd": flags.get("usd") or "0.40", "wall": flags.get("wall") or "3m", "title": "false"}
    aider = resolve_executable("aider", INSTALL_HINT, os.environ)
    root = Path(tempfile.mkdtemp(prefix="capguard-demo-"))
    try:
        return _run(root, flags, aider)
    finally:
        if not ns.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"capguard demo: kept {root}", file=sys.stderr)


def _run(root: Path, flags: dict, aider: str) -> int:
    repo = make_repo(root)
    # the demo's fake spend stays out of your ledger and run history
    os.environ["CAPGUARD_HOME"] = str(root / "capguard")
    settings = load_settings("aider", flags={**flags, "ledger": str(root / "capguard" / "ledger.db")}, env={}, files=[])
    usd = settings.caps.usd_micro  # `--usd off` leaves the demo to its wall-clock cap
    cap = "no USD cap" if usd is None else f"cap ${usd / 1_000_000:.2f}"
    print(
        f"capguard demo: aider against a fake model on 127.0.0.1; every reply costs $0.145, {cap}",
        file=sys.stderr,
    )
    with FakeOpenAI(runaway_script(prompt_tokens=REPLY_TOKENS[0], completion_tokens=REPLY_TOKENS[1])) as server:
        home = root / "home"
        home.mkdir()
        seed_price_cache(home, aider)
        cwd = Path.cwd()
        os.chdir(repo)
        try:
            code = run_agent("aider", aider_demo_args(server.base_url), settings, env=agent_env(home), cwd=repo)
        finally:
            os.chdir(cwd)
        sent = server.count("main")
    fired = code == EXIT_CODES[StopReason.USD]
    print(
        f"capguard demo: exit code {code}; the fake model answered {sent} request(s). "
        + ("The cap fired as it should." if fired else "The cap did not fire."),
        file=sys.stderr,
    )
    return 0 if fired else 1
