"""Fixtures that run the real capguard CLI around the real aider against a fake model on 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from capguard.cli.demo_cmd import seed_price_cache

FAKES = Path(__file__).parent.parent / "fakes"
REPO = Path(__file__).parent.parent.parent


def find_agent(name: str, env_var: str) -> str | None:
    """The agent's binary: $env_var, else on PATH, else what the README's npm line installed in .agents/."""
    local = REPO / ".agents" / "node_modules" / ".bin" / name
    return os.environ.get(env_var) or shutil.which(name) or (str(local) if local.exists() else None)


def agent_or_skip(name: str, env_var: str, install: str) -> str:
    """For a session fixture: the binary, or skip (fail where CI requires every agent)."""
    found = find_agent(name, env_var)
    if not found:
        if os.environ.get("CAPGUARD_REQUIRE_AGENTS"):
            pytest.fail(f"{name} is not installed but CAPGUARD_REQUIRE_AGENTS is set")
        pytest.skip(f"{name} is not installed ({install})")
    return found


def kill_tagged(tag: str) -> None:
    """Kill every process carrying this test's tag, tools in sessions of their own included."""
    for proc in psutil.process_iter():
        try:
            if proc.pid != os.getpid() and proc.environ().get("CAPGUARD_TEST_TAG") == tag:
                proc.kill()
        except psutil.Error:
            continue


def find_aider() -> str | None:
    return os.environ.get("CAPGUARD_TEST_AIDER") or shutil.which("aider")


@pytest.fixture(scope="session")
def aider_bin() -> str:
    found = find_aider()
    if not found:
        if os.environ.get("CAPGUARD_REQUIRE_AGENTS"):
            pytest.fail("aider is not installed but CAPGUARD_REQUIRE_AGENTS is set")
        pytest.skip("aider is not installed (pip install aider-chat==0.86.2)")
    return found


def make_repo(path: Path, files: dict[str, str] | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    files = files or {"hello.py": 'def greet():\n    return "helo"\n'}
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run(["git", "init", "-q"], cwd=path, check=True)
    subprocess.run([*git, "add", "-A"], cwd=path, check=True)
    subprocess.run([*git, "commit", "-qm", "init"], cwd=path, check=True)
    return path


@pytest.fixture
def repo(tmp_path) -> Path:
    return make_repo(tmp_path / "repo")


def trusted_config(path: Path, text: str) -> Path:
    """Write a repo's .capguard.toml and trust it (`capguard trust`): the user's own repo, whose file may name a
    command, args or prices. An untrusted one may only tighten caps (test_trust.py)."""
    from capguard.config import trust

    path.write_text(text)
    trust.trust(path)
    return path


def aider_flags(base_url: str, *, stream: bool = False, model: str = "openai/gpt-4o") -> list[str]:
    flags = [
        "--model",
        model,
        "--openai-api-base",
        base_url,
        "--openai-api-key",
        "sk-fake",
        "--no-check-update",
        "--no-show-release-notes",
        "--analytics-disable",
        "--yes-always",
        "--no-gitignore",
        "--no-auto-commits",
        "--no-pretty",
        "--no-show-model-warnings",
    ]
    return flags if stream else [*flags, "--no-stream"]


@dataclass
class Result:
    rc: int
    stdout: str
    stderr: str
    report: dict | None


class Capguard:
    """Runs `python -m capguard` in a repo with an isolated HOME and a tag to find the agent's tree."""

    def __init__(self, tmp_path: Path, aider: str, repo: Path):
        self.tmp = tmp_path
        self.repo = repo
        self.tag = uuid.uuid4().hex
        self.report_path = tmp_path / "report.json"
        home = tmp_path / "home"
        home.mkdir(exist_ok=True)
        seed_price_cache(home, aider)
        self.env = dict(os.environ)
        self.env.update(
            HOME=str(home),
            LITELLM_LOCAL_MODEL_COST_MAP="True",
            PATH=os.pathsep.join([str(Path(aider).parent), self.env.get("PATH", "")]),
            CAPGUARD_TEST_TAG=self.tag,
        )

    agent = "aider"

    def argv(self, caps: list[str], agent_args: list[str]) -> list[str]:
        return [
            sys.executable,
            "-m",
            "capguard",
            "--report-json",
            str(self.report_path),
            *caps,
            self.agent,
            *agent_args,
        ]

    def start(self, caps: list[str], agent_args: list[str], *, stdin=subprocess.DEVNULL, **kw) -> subprocess.Popen:
        return subprocess.Popen(
            self.argv(caps, agent_args),
            cwd=self.repo,
            env=self.env,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            **kw,
        )

    def run(self, caps: list[str], agent_args: list[str], *, input: str | None = None, timeout: float = 180) -> Result:
        stdin = subprocess.PIPE if input is not None else subprocess.DEVNULL
        proc = self.start(caps, agent_args, stdin=stdin)
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            raise AssertionError(f"capguard did not finish in {timeout}s\nstdout:{out[-2000:]}\nstderr:{err[-2000:]}")
        return self.result(proc.returncode, out, err)

    def result(self, rc: int, out: str, err: str) -> Result:
        report = json.loads(self.report_path.read_text()) if self.report_path.exists() else None
        return Result(rc, out, err, report)

    def survivors(self, wait: float = 3.0) -> list[psutil.Process]:
        """Live processes that carry this test's tag in their environment (the agent's tree)."""
        deadline = time.monotonic() + wait
        while True:
            found = []
            for proc in psutil.process_iter():
                try:
                    if proc.status() == psutil.STATUS_ZOMBIE or proc.pid == os.getpid():
                        continue
                    if proc.environ().get("CAPGUARD_TEST_TAG") == self.tag:
                        found.append(proc)
                except psutil.Error:
                    continue
            if not found or time.monotonic() > deadline:
                return found
            time.sleep(0.1)

    def cleanup(self) -> None:
        for proc in self.survivors(wait=0):
            try:
                proc.kill()
            except psutil.Error:
                pass


@pytest.fixture
def capguard(tmp_path, aider_bin, repo):
    runner = Capguard(tmp_path, aider_bin, repo)
    yield runner
    runner.cleanup()


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
