"""Gemini CLI under capguard, end to end: the real `gemini` (0.61.0) against the fake Gemini API on 127.0.0.1.

The runaway: every reply thinks a little, says something new (Gemini's content-loop detector cuts repeated text) and
runs a shell command that leaves a `sleep` in the background, which Gemini orphans in a session of its own. Each
test checks the stop, the report, the exit code, the ledger against the fake's request log, and that no process of
the tree is left (the sleeps carry the test's tag in their environment).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from capguard.ledger import open_ledger
from tests.fakes.fake_gemini import LOOP_CHECK, MAIN, ROUTER, FakeGemini, Reply, Script, shell_script
from tests.integration.conftest import Capguard, agent_or_skip
from tests.integration.test_monthly import seed

pytestmark = pytest.mark.agent
MODEL = "gemini-2.5-flash"  # named: no routing call (the `auto` model's router is a blind spot, tested apart)


@pytest.fixture(scope="session")
def gemini_bin() -> str:
    return agent_or_skip("gemini", "CAPGUARD_TEST_GEMINI", "npm install @google/gemini-cli@0.61.0")


class Gemini(Capguard):
    """capguard around the real gemini, with a scratch HOME that holds what a user sets up once: an auth type in
    settings.json, and this workspace trusted (GEMINI_CLI_TRUST_WORKSPACE, which capguard never sets itself)."""

    agent = "gemini"

    def __init__(self, tmp_path: Path, gemini: str, repo: Path):
        super().__init__(tmp_path, gemini, repo)
        self.gemini_path = gemini
        self.home = Path(self.env["HOME"])
        (self.home / ".gemini").mkdir(parents=True, exist_ok=True)
        (self.home / ".gemini" / "settings.json").write_text(
            json.dumps({"security": {"auth": {"selectedType": "gemini-api-key"}}})
        )
        for name in list(self.env):
            if name.startswith(("GEMINI_", "GOOGLE_")) or name == "CI":
                del self.env[name]
        self.env.update(GEMINI_API_KEY="fake-key", GEMINI_CLI_TRUST_WORKSPACE="true")

    def use(self, server: FakeGemini) -> Gemini:
        self.env["GOOGLE_GEMINI_BASE_URL"] = server.base_url
        return self

    def headless(self, caps: list[str], *extra: str, model: str | None = MODEL, timeout: float = 150):
        flags = ["-m", model] if model else []
        return self.run(caps, ["-y", *flags, "-p", "loop until told to stop", "-o", "text", *extra], timeout=timeout)

    def sessions(self) -> list[Path]:
        return list((self.home / ".gemini" / "tmp").glob("*/chats/session-*.jsonl"))


def runaway(tag: str, *, delay_s: float = 0.15, loop_confidence: float = 0.0) -> Script:
    def reply(i: int) -> Reply:
        return Reply(
            f"Attempt {i}: the build is still red, trying variant {i * 7 % 11}.",
            calls=(
                ("run_shell_command", {"command": f"CAPGUARD_TEST_TAG={tag} sleep 300 >/dev/null 2>&1 & echo {i}"}),
            ),
            thinking=f"Thinking about attempt {i}.",
            delay_s=delay_s,
        )

    return Script([reply], loop_confidence=loop_confidence)


@pytest.fixture
def gemini(tmp_path, gemini_bin, repo):
    runner = Gemini(tmp_path, gemini_bin, repo)
    yield runner
    runner.cleanup()


def assert_tree_gone(runner: Capguard) -> None:
    survivors = runner.survivors()
    assert not survivors, f"left running: {[(p.pid, p.name(), p.cmdline()) for p in survivors]}"


def ledger_of(run_id: str) -> tuple[dict, list[dict]]:
    with open_ledger(Path(os.environ["CAPGUARD_HOME"]) / "ledger.db") as ledger:
        return ledger.run(run_id), ledger.usage(run_id)


def as_billed(row: dict) -> tuple[int, int, int]:
    """A ledger row as the fake billed it: (promptTokenCount, cached, candidates + thoughts)."""
    return row["input_tokens"] + row["cache_read_tokens"], row["cache_read_tokens"], row["output_tokens"]


def billed_main(server: FakeGemini) -> list[tuple[int, int, int]]:
    return [(u["input"], u["cached"], u["output"] + u["thoughts"]) for u in (r["usage"] for r in server.billed(MAIN))]


def assert_ledger_is_the_fakes_log(result, server: FakeGemini, model: str = MODEL) -> list[dict]:
    """Every reply Gemini wrote is in the ledger once, with the figures the fake billed; the only billed main reply
    that may be missing is the last, billed as the stop came and never written by Gemini (a named blind spot)."""
    run, rows = ledger_of(result.report["run_id"])
    assert run["exit_code"] == result.rc and run["stop_reason"] == result.report["stop_reason"]
    assert len({r["dedupe_key"] for r in rows}) == len(rows) == result.report["steps"]
    billed, counted = billed_main(server), sorted(as_billed(r) for r in rows)
    assert counted in (sorted(billed), sorted(billed[:-1])), (counted, billed)
    assert sum(r["input_tokens"] + r["cache_read_tokens"] + r["output_tokens"] for r in rows) == result.report["tokens"]
    assert sum(r["cost_micro_usd"] for r in rows) == round(result.report["cost_usd"] * 1e6)
    assert {r["priced_by"] for r in rows} == {"genai-prices"} and {r["model"] for r in rows} == {model}
    return rows


def assert_within_one_reply(report: dict, cap: float, figure: str) -> None:
    at_stop = report["at_stop"][figure]
    largest = report["largest_reply_usd"] if figure == "cost_usd" else None
    assert at_stop >= cap
    if largest is not None:
        assert at_stop - largest < cap


def test_usd_cap_stops_a_headless_runaway_exit_122_though_gemini_exits_0(gemini):
    with FakeGemini(runaway(gemini.tag)) as server:
        # time for the polite stop (SIGTERM) to end Gemini itself, whose exit status is then 0 (on a loaded machine
        # it took up to 2.5 s; no request was sent meanwhile)
        result = gemini.use(server).headless(["--usd", "0.006", "--grace", "30"])
        kinds = {r["kind"] for r in server.requests}
    assert result.rc == 122, result.stderr[-3000:]
    report = result.report
    assert report["stop_reason"] == "usd" and report["agent_returncode"] == 0  # Gemini exits 0 when stopped
    assert_within_one_reply(report, 0.006, "cost_usd")
    assert "capguard: stopped gemini: cost $0.0" in result.stderr and "reached the $0.0060 cap" in result.stderr
    assert report["stop_steps"][0].startswith("sending SIGTERM to gemini")
    assert report["leftovers_stopped"] >= report["steps"] - 1  # the orphaned background sleeps, one a tool call
    assert kinds == {MAIN}  # a named model: no router, no other side call (the blind spots did not occur)
    assert_ledger_is_the_fakes_log(result, server)
    assert len(gemini.sessions()) == 1
    assert_tree_gone(gemini)


def test_token_cap_with_the_auto_model_leaves_only_the_routing_call_uncounted(gemini):
    """Gemini's default model `auto` routes each prompt with a flash-lite call that is not in the session file: the
    ledger is the fake's main requests, the difference is that one router call, and the report names it."""
    with FakeGemini(runaway(gemini.tag)) as server:
        result = gemini.use(server).headless(["--tokens", "50k"], model=None)
        router = server.billed(ROUTER)
        kinds = {r["kind"] for r in server.requests}
    assert result.rc == 121, result.stderr[-3000:]
    report = result.report
    assert report["stop_reason"] == "tokens" and report["at_stop"]["tokens"] >= 50_000
    assert "tokens reached the 50k-token cap" in result.stderr
    assert len(router) == 1 and kinds == {MAIN, ROUTER}
    assert any("routing call" in spot for spot in report["blind_spots"])
    rows = assert_ledger_is_the_fakes_log(result, server, model="gemini-3.8-flash")
    assert all(r["model"] != router[0]["model"] for r in rows)
    assert_tree_gone(gemini)


def test_wall_cap_on_the_freeze_sweep_path_leaves_no_orphaned_tool(gemini):
    """Without a cgroup: Gemini's finished tools left their background sleeps orphaned in sessions of their own;
    capguard, their subreaper, freezes and sweeps them."""
    gemini.env["CAPGUARD_CGROUP"] = "off"
    with FakeGemini(runaway(gemini.tag, delay_s=0.3)) as server:
        result = gemini.use(server).headless(["--wall", "12s"])
        main = len(server.billed(MAIN))
    assert result.rc == 124, result.stderr[-3000:]
    report = result.report
    assert report["stop_reason"] == "wall" and report["tree_stop"] == "freeze-sweep"
    assert main >= 2  # a tool call ran (its result went back): its sleep was left behind
    assert report["leftovers_stopped"] >= 1
    assert "capguard: stopped gemini: wall-clock " in result.stderr and "reached the 12.0s cap" in result.stderr
    assert_ledger_is_the_fakes_log(result, server)
    assert_tree_gone(gemini)


def test_an_uncapped_run_is_metered_to_the_token_and_exits_with_geminis_status(gemini):
    script = shell_script(f"CAPGUARD_TEST_TAG={gemini.tag} sleep 300 >/dev/null 2>&1 & echo started", "All done.")
    with FakeGemini(script) as server:
        result = gemini.use(server).headless([])
        billed = billed_main(server)
    assert result.rc == 0, result.stderr[-3000:]
    report = result.report
    assert report["stop_reason"] is None and report["steps"] == 2 == len(billed)
    assert "capguard: gemini exited (status 0): 2 replies" in result.stderr
    _, rows = ledger_of(report["run_id"])
    assert sorted(as_billed(r) for r in rows) == sorted(billed)  # nothing in flight: every billed reply, exactly
    assert report["leftovers_stopped"] == 1  # the sleep Gemini's finished tool left behind
    assert_tree_gone(gemini)


def test_geminis_own_loop_detection_is_its_own_stop_not_a_cap(gemini):
    """From turn 30 Gemini asks a model whether it is looping; told yes, it ends the run itself with status 0."""
    with FakeGemini(runaway(gemini.tag, delay_s=0.0, loop_confidence=0.95)) as server:
        result = gemini.use(server).headless(["--usd", "5"], timeout=240)
        checks = server.billed(LOOP_CHECK)
        billed = billed_main(server)
    assert result.rc == 0, result.stderr[-3000:]
    report = result.report
    assert report["stop_reason"] is None and report["agent_returncode"] == 0 and not report["self_stopped"]
    assert "capguard: gemini exited (status 0)" in result.stderr
    assert len(checks) >= 1 and len(billed) >= 30
    _, rows = ledger_of(report["run_id"])
    assert sorted(as_billed(r) for r in rows) == sorted(billed)  # the loop check itself: a named blind spot
    assert any("loop check" in spot for spot in report["blind_spots"])
    assert_tree_gone(gemini)


def test_a_spent_month_refuses_to_start_gemini(gemini, tmp_path):
    team = tmp_path / "team.toml"
    team.write_text(f'ledger = "{tmp_path / "team.db"}"\nuser = "dev@example.com"\n[team]\nmonthly_usd = 1\n')
    gemini.env["CAPGUARD_CONFIG"] = str(team)
    seed(str(tmp_path / "team.db"), 1.25)
    with FakeGemini(runaway(gemini.tag)) as server:
        result = gemini.use(server).headless(["--usd", "5"])
        requests = server.requests
    assert result.rc == 117, result.stderr[-3000:]
    assert "gemini not started" in result.stderr and "monthly" in result.stderr
    assert requests == [] and gemini.sessions() == []
    assert_tree_gone(gemini)


def test_import_adds_what_capguard_did_not_meter_once(gemini):
    """One session run without capguard, one under it: the import adds the first's replies to the token, skips the
    second (same keys as live metering), and a second import reads nothing."""
    script = lambda: shell_script("echo hi", "All done.")  # noqa: E731
    with FakeGemini(script()) as server:
        direct = subprocess.run(
            [gemini.gemini_path, "-y", "-m", MODEL, "-p", "run it", "-o", "text"],
            cwd=gemini.repo,
            env={**gemini.env, "GOOGLE_GEMINI_BASE_URL": server.base_url, "GEMINI_CLI_NO_RELAUNCH": "true"},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=120,
        )
        assert direct.returncode == 0, direct.stderr[-2000:]
        outside = billed_main(server)
    with FakeGemini(script()) as server:
        supervised = gemini.use(server).headless([])
    assert supervised.rc == 0 and len(gemini.sessions()) == 2

    def run_import() -> dict:
        done = subprocess.run(
            [sys.executable, "-m", "capguard", "import", "gemini", str(gemini.home / ".gemini"), "--json"],
            env=gemini.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    first = run_import()
    assert (first["files_read"], first["replies_added"], first["runs_created"]) == (2, 2, 1)
    assert first["sessions_covered"] == 1  # the supervised run's replies are in the ledger already
    assert first["tokens_added"] == sum(u[0] + u[2] for u in outside)
    with open_ledger(Path(os.environ["CAPGUARD_HOME"]) / "ledger.db") as ledger:
        (imported,) = ledger.query("SELECT id FROM runs WHERE agent = ? AND status = ?", ("gemini", "imported"))
        rows = ledger.usage(imported["id"])
    assert sorted(as_billed(r) for r in rows) == sorted(outside)
    assert {r["priced_by"] for r in rows} == {"genai-prices"}
    again = run_import()
    assert (again["files_unchanged"], again["replies_added"], again["runs_created"]) == (2, 0, 0)


def test_steps_cap_stops_a_headless_runaway_exit_120(gemini):
    """Gemini's replies are read from its session file once written: the cap fires when the fifth is there. Gemini
    may already have sent the sixth (its tool result goes straight back), billed as the stop came; if Gemini wrote
    it before the stop landed it is counted too, so the ledger holds 5 replies, or 6 (within one)."""
    with FakeGemini(runaway(gemini.tag)) as server:
        result = gemini.use(server).headless(["--steps", "5", "--grace", "30"])
    assert result.rc == 120, result.stderr[-3000:]
    report = result.report
    assert report["stop_reason"] == "steps" and report["exit_code"] == 120
    assert report["at_stop"]["steps"] >= 5 and report["steps"] in (5, 6)
    assert "capguard: stopped gemini: " in result.stderr and "reached the 5-reply cap" in result.stderr
    assert_ledger_is_the_fakes_log(result, server)
    run, _ = ledger_of(report["run_id"])
    assert run["stop_reason"] == "steps" and run["exit_code"] == 120
    assert_tree_gone(gemini)


def test_max_session_turns_is_geminis_own_stop_exit_53_not_a_cap(gemini):
    """`model.maxSessionTurns` in the user's settings: Gemini ends the run itself with status 53; capguard passes
    it on, names no cap, and every reply Gemini was billed for is in the ledger to the token (nothing in flight)."""
    settings = gemini.home / ".gemini" / "settings.json"
    settings.write_text(json.dumps({**json.loads(settings.read_text()), "model": {"maxSessionTurns": 3}}))
    with FakeGemini(runaway(gemini.tag)) as server:
        result = gemini.use(server).headless(["--usd", "5"])
        billed = billed_main(server)
    assert result.rc == 53, result.stderr[-3000:]
    report = result.report
    assert report["stop_reason"] is None and report["agent_returncode"] == 53 and not report["self_stopped"]
    assert report["exit_code"] == 53
    assert "capguard: gemini exited (status 53)" in result.stderr
    assert report["steps"] == len(billed) >= 1
    run, rows = ledger_of(report["run_id"])
    assert run["stop_reason"] is None and run["exit_code"] == 53
    assert sorted(as_billed(r) for r in rows) == sorted(billed)
    assert_tree_gone(gemini)
