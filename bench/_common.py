"""Shared pieces of the benchmarks: the machine, isolated environments, percentiles, result files."""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WORK = BENCH / ".work"
RESULTS_DIR = WORK / "results"

# defaults: the Python running the bench (capguard installed in it) and the agents the README's test command installs
CG_PYTHON = os.environ.get("CAPGUARD_BENCH_PYTHON", sys.executable)
AIDER = os.environ.get("CAPGUARD_BENCH_AIDER", shutil.which("aider") or str(Path(sys.executable).parent / "aider"))


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (no interpolation): p99 of 200 samples is the 198th smallest."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def summary(values: list[float]) -> dict:
    return {
        "n": len(values),
        "min": min(values) if values else math.nan,
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "max": max(values) if values else math.nan,
        "mean": sum(values) / len(values) if values else math.nan,
    }


def _run(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def code_files() -> dict[str, str]:
    """A short hash of each capguard/**/*.py as it is on disk (others edit the tree while benchmarks run)."""
    return {
        str(p.relative_to(ROOT)): hashlib.sha256(p.read_bytes()).hexdigest()[:10]
        for p in sorted((ROOT / "capguard").rglob("*.py"))
    }


def code_fingerprint(files: dict[str, str] | None = None) -> str:
    """One hash of all of capguard/**/*.py: the code measured."""
    files = code_files() if files is None else files
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:12]


def code_changes(before: dict[str, str] | None) -> list[str]:
    """capguard files added, removed or changed since `before` (from machine()["code_files"])."""
    if before is None:
        return []
    after = code_files()
    return sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))


def machine() -> dict:
    cpu = "?"
    try:
        for text in Path("/proc/cpuinfo").read_text().splitlines():
            if text.startswith("model name"):
                cpu = text.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_mb = None
    try:
        for text in Path("/proc/meminfo").read_text().splitlines():
            if text.startswith("MemTotal:"):
                ram_mb = int(text.split()[1]) // 1024
    except OSError:
        pass
    work_fs = _run(["df", "--output=fstype", str(ROOT)]).splitlines()[-1:] or ["?"]
    commit = _run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = _run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "capguard"])
    return {
        "date": _run(["date", "-Is"]),
        "uname": _run(["uname", "-a"]),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_mb": ram_mb,
        "python": _run([CG_PYTHON, "-c", "import sys; print(sys.version.split()[0])"]) or platform.python_version(),
        "capguard_commit": commit + (" (capguard/ has uncommitted changes)" if dirty else ""),
        "code": code_fingerprint(files := code_files()),
        "code_files": files,
        "work_fs": work_fs[0].strip(),
        "loadavg": loadavg(),
    }


def command_line() -> str:
    """The command that produced these figures, as typed from the repository root."""
    script = Path(sys.argv[0]).resolve()
    try:
        script = script.relative_to(ROOT)
    except ValueError:
        pass
    return shlex.join([sys.executable, str(script), *sys.argv[1:]])


def isolated_env(name: str, *, fresh: bool = True) -> tuple[Path, dict[str, str]]:
    """A scratch folder under bench/.work/NAME and an environment whose HOME, CAPGUARD_HOME and XDG config,
    data and cache directories all point inside it: nothing touches the real user's files."""
    base = WORK / name
    if fresh and base.exists():
        shutil.rmtree(base)
    for sub in ("home", "capguard", "xdg", "xdg-data", "xdg-cache"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAPGUARD_", "AIDER_", "OPENAI_", "ANTHROPIC_"))}
    env.update(
        {
            "HOME": str(base / "home"),
            "CAPGUARD_HOME": str(base / "capguard"),
            "XDG_CONFIG_HOME": str(base / "xdg"),
            "XDG_DATA_HOME": str(base / "xdg-data"),
            "XDG_CACHE_HOME": str(base / "xdg-cache"),
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "CAPGUARD_TITLE": "false",
        }
    )
    return base, env


def make_git_repo(path: Path, env: dict[str, str]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "hello.py").write_text('def greet():\n    return "hello"\n')
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.invalid"]
    subprocess.run(["git", "init", "-q"], cwd=path, check=True, env=env)
    subprocess.run([*git, "add", "-A"], cwd=path, check=True, env=env)
    subprocess.run([*git, "commit", "-qm", "init"], cwd=path, check=True, env=env)
    return path


def save(name: str, data: dict) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(data, indent=1))
    return path


def ms(seconds_or_ns: float, *, ns: bool = False) -> float:
    return seconds_or_ns / 1e6 if ns else seconds_or_ns * 1e3


def now_ns() -> int:
    return time.monotonic_ns()
