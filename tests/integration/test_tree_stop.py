"""The whole tree, always: escaping children die at the stop, in the run's cgroup and in the freeze-sweep fallback.

A grandchild that setsid()s and double-forks, a chain that re-forks every millisecond, and capguard itself
SIGKILLed: each drives the real capguard process around a fast stand-in agent.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from capguard.supervisor import cgroup
from tests.integration.conftest import FAKES, Capguard, make_repo, trusted_config, wait_for

HAS_CGROUP = cgroup.parent_dir() is not None
MODES = [
    pytest.param("cgroup", marks=pytest.mark.skipif(not HAS_CGROUP, reason="no writable cgroup v2 here")),
    "freeze-sweep",
]


@pytest.fixture(autouse=True)
def no_cgroup_left():
    """A test leaves no cgroup of its runs behind; one it finds is removed, and fails the test."""
    parent = cgroup.parent_dir()
    yield
    if parent is None:
        return
    runs = [p.name for p in (Path(os.environ["CAPGUARD_HOME"]) / "runs").glob("*")]
    leaked = [g.path.name for g in cgroup._abandoned(parent) if any(run in g.path.name for run in runs)]
    cgroup.kill_leftovers()
    assert not leaked, f"cgroups left behind: {leaked}"


@pytest.fixture
def fake(tmp_path):
    repo = make_repo(tmp_path / "repo")
    agent = tmp_path / "fake-aider"
    agent.write_text(f'#!/bin/sh\nexec {sys.executable} {FAKES / "fake_aider.py"} "$@"\n')
    wrapper = tmp_path / "escaping-aider"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} {FAKES / "escaping_children.py"} "$@"\n')
    for script in (agent, wrapper):
        script.chmod(0o755)
    trusted_config(repo / ".capguard.toml", f'[agents.aider]\ncommand = "{wrapper}"\n')
    runner = Capguard(tmp_path, str(wrapper), repo)
    runner.children = tmp_path / "children.txt"
    runner.env.update(CAPGUARD_TEST_CHILDREN=str(runner.children), CAPGUARD_TEST_REAL_AGENT=str(agent))
    yield runner
    runner.cleanup()
    for _ in range(3):  # a chain has a new pid each millisecond: a few rounds (it ends by itself within 20 s)
        runner.cleanup()


def use(fake, mode: str, escape: str) -> None:
    fake.env.update(CAPGUARD_TEST_ESCAPE=escape)
    if mode == "freeze-sweep":
        fake.env["CAPGUARD_CGROUP"] = "off"


def noted(fake, word: str) -> list[int]:
    lines = fake.children.read_text().splitlines() if fake.children.exists() else []
    return [int(line.split()[1]) for line in lines if line.startswith(word + " ")]


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@pytest.mark.parametrize("mode", MODES)
def test_double_forked_grandchild_dies_at_the_cap(fake, mode):
    use(fake, mode, "double-fork")
    fake.env.update(FAKE_REPLIES="5", FAKE_COST="0.2", FAKE_INTERVAL="0.2", FAKE_IDLE="60")
    result = fake.run(["--usd", "0.5"], [])
    assert result.rc == 122, result.stderr
    assert result.report["tree_stop"] == mode
    [grandchild] = noted(fake, "escaped")
    assert not alive(grandchild)
    assert result.report["leftovers_stopped"] >= 1
    assert not fake.survivors()


@pytest.mark.parametrize("mode", MODES)
def test_orphans_left_by_an_agent_that_exits_are_stopped(fake, mode):
    use(fake, mode, "double-fork")
    fake.env.update(FAKE_REPLIES="1", FAKE_COST="0.01")
    result = fake.run(["--usd", "5"], [])
    assert result.rc == 0, result.stderr
    assert result.report["tree_stop"] == mode and result.report["leftovers_stopped"] >= 1
    assert not [p for p in noted(fake, "escaped") if alive(p)]
    assert not fake.survivors()


@pytest.mark.parametrize("mode", MODES)
def test_a_chain_that_reforks_every_millisecond_is_stopped(fake, mode):
    use(fake, mode, "fork-chain")
    fake.env.update(FAKE_IDLE="60")
    result = fake.run(["--wall", "2s"], [])
    assert result.rc == 124, result.stderr
    assert result.report["tree_stop"] == mode
    steps = " | ".join(result.report["stop_steps"])
    assert noted(fake, "chain-start"), "the chain never started"
    assert "chain-end\n" not in fake.children.read_text(), steps  # it was stopped, it did not run out
    assert not fake.survivors()
    assert ("cgroup.kill" in steps) if mode == "cgroup" else ("SIGSTOP" in steps and "empty twice" in steps), steps


def start_with_grandchild(fake) -> tuple[subprocess.Popen, int, Path]:
    use(fake, "cgroup", "double-fork")
    fake.env.update(FAKE_IDLE="60", FAKE_STARTED=str(fake.tmp / "started"))
    proc = fake.start([], [])
    wait_for(lambda: (fake.tmp / "started").exists() and noted(fake, "escaped"), 30, "the grandchild to start")
    [grandchild] = noted(fake, "escaped")
    line = Path(f"/proc/{grandchild}/cgroup").read_text().splitlines()
    relative = next(entry[3:] for entry in line if entry.startswith("0::"))
    group = cgroup.parent_dir() / Path(relative).name
    assert group.name.startswith(cgroup.PREFIX) and group.is_dir()
    return proc, grandchild, group


@pytest.mark.skipif(not HAS_CGROUP, reason="no writable cgroup v2 here")
def test_capguard_sigkilled_its_guard_kills_the_whole_cgroup(fake):
    proc, grandchild, group = start_with_grandchild(fake)
    proc.kill()  # nothing of capguard runs any more: the death signal takes the agent, the guard the rest
    proc.communicate(timeout=10)
    wait_for(lambda: not alive(grandchild), 10, "the grandchild to die")
    wait_for(lambda: not group.exists(), 10, "the cgroup to be removed")
    assert not fake.survivors()


@pytest.mark.skipif(not HAS_CGROUP, reason="no writable cgroup v2 here")
def test_capguard_and_its_guard_sigkilled_the_next_start_kills_the_leftover(fake):
    proc, grandchild, group = start_with_grandchild(fake)
    [guard] = [p for p in psutil.process_iter(["cmdline"]) if str(group) in " ".join(p.info["cmdline"] or [])]
    guard.kill()
    guard.wait(10)
    agent = int((fake.tmp / "started").read_text())
    proc.kill()
    proc.wait(timeout=10)  # not communicate(): the grandchild holds capguard's stdout and stderr open
    proc.stdout.close()
    proc.stderr.close()
    wait_for(lambda: not alive(agent), 10, "the death signal to kill the agent")
    assert alive(grandchild) and group.exists()  # the limit: nothing of this run is left to kill it
    fake.env.update(CAPGUARD_TEST_ESCAPE="none", FAKE_IDLE="0", FAKE_STARTED="")
    result = fake.run([], [])  # the next run, of anything, started in the same cgroup
    assert result.rc == 0, result.stderr
    assert not alive(grandchild) and not group.exists()
    assert not fake.survivors()
