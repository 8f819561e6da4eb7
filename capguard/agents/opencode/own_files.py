"""A project's own OpenCode files that would run code inside OpenCode: refused in strict mode.

OpenCode 1.18.33 loads, from the run's directory and each one above it up to the git worktree's root: the
`opencode.json(c)` files and the `.opencode/` folders, with their `{plugin,plugins}/*.{ts,js}` and
`{tool,tools}/*.{js,ts}` files, imported into OpenCode's own process at start (no prompt, `opencode run` too), and
their config's `plugin` list and provider SDK packages (`npm`, a model's `provider.npm`, installed from npm or a
`file://` path). Any of them may come with a cloned repository, and code in OpenCode's process can send its model
calls past capguard's proxy: a plugin's `config` hook rewrote the fronted provider's baseURL and a tool file
replaced `fetch`, and the real OpenCode sent a strict run's calls to another server, uncounted
(tests/integration/test_strict_opencode.py). The user's own folders (`~/.config/opencode`, `~/.opencode`) are
theirs, as their config is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

CONFIG_NAMES = ("opencode.json", "opencode.jsonc")
CODE_FOLDERS = ("plugin", "plugins", "tool", "tools")
CODE_SUFFIXES = (".ts", ".js")
# Environment switch that makes OpenCode skip the project's `.opencode` folders and config files
DISABLE_PROJECT = "OPENCODE_DISABLE_PROJECT_CONFIG"


def project_dirs(directory: Path, home: Path) -> list[Path]:
    """The directories OpenCode takes project files from: `directory` and each parent up to the first holding
    `.git` (the worktree's root), or up to the filesystem's root outside git; never home (the user's own)."""
    found = []
    for place in [directory, *directory.parents]:
        if place == home:
            break
        found.append(place)
        if (place / ".git").exists():
            break
    return found


def _code_files(folder: Path) -> Iterator[Path]:
    for name in CODE_FOLDERS:
        try:
            entries = sorted((folder / name).iterdir())
        except OSError:
            continue
        yield from (path for path in entries if path.suffix in CODE_SUFFIXES)


def config_refusal(path: Path, config: dict, fronted_sdks: frozenset[str]) -> str | None:
    """Why a project config would load code into OpenCode (a plugin, an SDK package the proxy does not front)."""
    if config.get("plugin"):
        return f"`plugin` in {path} loads code into OpenCode, which can send its model calls past the proxy"
    providers = config.get("provider")
    for name, entry in (providers if isinstance(providers, dict) else {}).items():
        if not isinstance(entry, dict):
            continue
        models = entry.get("models")
        packages = [(f"provider.{name}.npm", entry.get("npm"))]
        for model, spec in (models if isinstance(models, dict) else {}).items():
            custom = spec.get("provider") if isinstance(spec, dict) else None
            if isinstance(custom, dict):
                packages.append((f"provider.{name}.models.{model}.provider.npm", custom.get("npm")))
        for where, package in packages:
            if package is not None and package not in fronted_sdks:
                return f"{where} in {path} loads a package into OpenCode the proxy does not front"
    return None


def refusals(
    directory: Path,
    env: Mapping[str, str],
    home: Path,
    read: Callable[[str], dict],
    fronted_sdks: frozenset[str],
) -> list[str]:
    """Each project file that would run code inside OpenCode, with why (one line each, naming the file)."""
    if env.get(DISABLE_PROJECT, "").lower() in ("1", "true"):
        return []
    found: list[str] = []
    for place in project_dirs(directory, home):
        folder = place / ".opencode"
        for path in _code_files(folder):
            found.append(f"{path} is code OpenCode loads into itself, which can send its model calls past the proxy")
        for path in [place / name for name in CONFIG_NAMES] + [folder / name for name in CONFIG_NAMES]:
            try:
                text = path.read_text()
            except OSError:
                continue
            try:
                config = read(text)
            except ValueError:
                found.append(f"{path} is not JSON capguard can read")
                continue
            why = config_refusal(path, config, fronted_sdks)
            if why:
                found.append(why)
    return found
