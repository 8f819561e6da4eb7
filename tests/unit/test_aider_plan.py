"""agents/aider.py: the repo-map plan, the model aider will use, and the launch plan capguard builds."""

from __future__ import annotations

import math
import signal
from fractions import Fraction
from pathlib import Path

import pytest

from capguard.agents.aider.adapter import ADAPTER, MAP_TOLERANCE, model_from_args, plan_map_tokens
from capguard.agents.aider.logs import AnalyticsParser, LlmHistoryMapParser
from capguard.config import trust
from capguard.config.settings import load_settings
from capguard.core.errors import AgentNotExecutable, AgentNotFound, ConfigError
from capguard.core.events import Reply

# -- plan_map_tokens ---------------------------------------------------------------------------------


def largest_fitting(cap: int, multiplier: float = 2) -> int:
    """The largest --map-tokens whose worst map (x multiplier with no files, x MAP_TOLERANCE) stays within cap."""
    return math.floor(Fraction(cap) / (Fraction(str(multiplier)) * Fraction(str(MAP_TOLERANCE))))


def test_map_tokens_chosen_so_the_worst_map_fits_the_cap():
    plan = plan_map_tokens(4_600, [], {}, clamp=False)
    assert plan.map_tokens == largest_fitting(4_600)
    assert plan.map_tokens < 4_600 / 2  # the no-files doubling is planned for
    assert plan.note is None


@pytest.mark.parametrize("cap", [1, 100, 1_024, 2_048, 4_096, 4_600, 8_191, 100_003])
def test_planned_worst_case_never_exceeds_the_cap(cap):
    plan = plan_map_tokens(cap, [], {}, clamp=False)
    assert plan.worst_case <= cap
    assert plan.map_tokens == largest_fitting(cap)


def test_users_map_tokens_within_the_cap_is_kept():
    plan = plan_map_tokens(4_600, ["--map-tokens", "1024"], {}, clamp=False)
    assert (plan.map_tokens, plan.note) == (1_024, None)
    assert 2_048 <= plan.worst_case <= 4_600


def test_users_map_tokens_above_the_cap_is_refused_with_the_numbers():
    with pytest.raises(ConfigError) as err:
        plan_map_tokens(4_600, ["--map-tokens", "4096"], {}, clamp=False)
    message = str(err.value)
    for part in ("--map-tokens 4096", "map_tokens cap 4600", f"--map-tokens {largest_fitting(4_600)} or less", "clamp"):
        assert part in message


def test_users_map_tokens_above_the_cap_is_clamped_when_asked():
    plan = plan_map_tokens(4_600, ["--map-tokens", "4096"], {}, clamp=True)
    assert plan.map_tokens == largest_fitting(4_600)
    assert plan.worst_case <= 4_600
    assert f"--map-tokens 4096 clamped to {largest_fitting(4_600)}" in plan.note


def test_map_tokens_with_equals_sign_is_read():
    with pytest.raises(ConfigError):
        plan_map_tokens(4_600, ["--map-tokens=4096"], {}, clamp=False)


def test_aider_map_tokens_from_the_environment_is_checked_and_named():
    with pytest.raises(ConfigError, match="AIDER_MAP_TOKENS 4096"):
        plan_map_tokens(4_600, [], {"AIDER_MAP_TOKENS": "4096"}, clamp=False)


def test_map_tokens_flag_beats_the_environment():
    plan = plan_map_tokens(4_600, ["--map-tokens", "512"], {"AIDER_MAP_TOKENS": "4096"}, clamp=False)
    assert plan.map_tokens == 512


def test_map_tokens_after_double_dash_is_a_file_name():
    plan = plan_map_tokens(4_600, ["--", "--map-tokens", "9999"], {}, clamp=False)
    assert plan.map_tokens == largest_fitting(4_600)


def test_multiplier_from_the_flag_shrinks_the_map():
    plan = plan_map_tokens(4_600, ["--map-multiplier-no-files", "4"], {}, clamp=False)
    assert plan.map_tokens == largest_fitting(4_600, 4)


def test_multiplier_from_the_environment_is_used():
    plan = plan_map_tokens(4_600, [], {"AIDER_MAP_MULTIPLIER_NO_FILES": "4"}, clamp=False)
    assert plan.map_tokens == largest_fitting(4_600, 4)


def test_multiplier_below_one_is_planned_as_one():
    plan = plan_map_tokens(4_600, ["--map-multiplier-no-files", "0.5"], {}, clamp=False)
    assert plan.map_tokens == largest_fitting(4_600, 1)


@pytest.mark.parametrize("args", [["--map-multiplier-no-files", "lots"], ["--map-tokens", "big"]])
def test_non_numeric_aider_values_are_config_errors(args):
    with pytest.raises(ConfigError, match="is not a number"):
        plan_map_tokens(4_600, args, {}, clamp=False)


# -- model_from_args ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "env", "model"),
    [
        (["--model", "openai/gpt-4o"], {}, "openai/gpt-4o"),
        (["--model=openai/my-model"], {}, "openai/my-model"),
        (["--model", "sonnet"], {}, "anthropic/claude-sonnet-4-5"),
        (["--model", "4o"], {}, "openai/gpt-4o"),
        (["--4o"], {}, "openai/gpt-4o"),
        (["--mini", "calc.py"], {}, "openai/gpt-4o-mini"),
        ([], {"AIDER_MODEL": "deepseek/deepseek-chat"}, "deepseek/deepseek-chat"),
        ([], {"AIDER_MODEL": "haiku"}, "anthropic/claude-haiku-4-5"),
        ([], {"ANTHROPIC_API_KEY": "x"}, "anthropic/claude-sonnet-4-5"),
        ([], {"OPENAI_API_KEY": "x"}, "openai/gpt-4o"),
        ([], {"OPENAI_API_KEY": "x", "ANTHROPIC_API_KEY": "y"}, "anthropic/claude-sonnet-4-5"),
        (["calc.py"], {}, None),
    ],
    ids=[
        "model",
        "model=",
        "alias",
        "numeric-alias",
        "shortcut",
        "shortcut-with-file",
        "env",
        "env-alias",
        "anthropic-key",
        "openai-key",
        "anthropic-key-first",
        "nothing",
    ],
)
def test_model_is_read_like_aider_reads_it(args, env, model):
    assert model_from_args(args, env) == model


def test_model_flag_beats_aider_model_env():
    assert model_from_args(["--model", "openai/gpt-4o"], {"AIDER_MODEL": "sonnet"}) == "openai/gpt-4o"


def test_last_model_flag_wins():
    assert model_from_args(["--model", "sonnet", "--model", "openai/gpt-4o"], {}) == "openai/gpt-4o"


def test_model_flag_beats_a_shortcut():
    assert model_from_args(["--4o", "--model", "sonnet"], {}) == "anthropic/claude-sonnet-4-5"


def test_named_model_beats_the_api_key_default():
    assert model_from_args(["--model", "openai/gpt-4o"], {"ANTHROPIC_API_KEY": "x"}) == "openai/gpt-4o"


def test_empty_api_key_does_not_choose_a_model():
    assert model_from_args([], {"ANTHROPIC_API_KEY": "", "OPENAI_API_KEY": "x"}) == "openai/gpt-4o"


def test_model_after_double_dash_is_a_file_name():
    assert model_from_args(["--", "--model", "sonnet"], {}) is None


# -- AiderAdapter.plan -------------------------------------------------------------------------------


@pytest.fixture
def project(tmp_path):
    folder = tmp_path / "project"
    folder.mkdir()
    return folder


@pytest.fixture
def run_dir(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    return folder


def settings(project: Path, toml: str = "", **flags):
    if toml:  # the user's own repo: trusted, so it may name a command and args
        trust.trust(write_file(project / ".capguard.toml", toml))
    return load_settings("aider", flags=flags, env={}, cwd=project)


def write_file(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def plan(args, project, run_dir, fake_bin, *, env=None, toml="", **flags):
    full_env = {"PATH": str(fake_bin), **(env or {})}
    return ADAPTER.plan(list(args), settings(project, toml, **flags), run_dir, full_env, "RUN1")


def test_plan_runs_aider_found_on_path(project, run_dir, fake_bin):
    assert plan(["calc.py"], project, run_dir, fake_bin).argv[0] == str(fake_bin / "aider")


def test_plan_adds_an_analytics_log_in_the_run_dir(project, run_dir, fake_bin):
    launch = plan(["calc.py"], project, run_dir, fake_bin)
    ours = str(run_dir / "aider.analytics.jsonl")
    assert launch.argv[1:] == ["calc.py", "--analytics-log", ours]
    (watch,) = launch.watches
    assert (watch.path, watch.from_end) == (Path(ours), False)


def test_analytics_watch_parses_with_the_run_id(project, run_dir, fake_bin):
    (watch,) = plan([], project, run_dir, fake_bin).watches
    parser = watch.make_parser(watch.path)
    assert isinstance(parser, AnalyticsParser)
    line = b'{"event": "message_send", "properties": {"prompt_tokens": 1, "completion_tokens": 1}}'
    (reply,) = parser.feed(line, 0)
    assert isinstance(reply, Reply)
    assert reply.key.startswith("aider:RUN1:")


def test_users_own_analytics_log_is_tailed_from_its_end(project, run_dir, fake_bin, tmp_path):
    theirs = tmp_path / "mine.jsonl"
    launch = plan(["--analytics-log", str(theirs)], project, run_dir, fake_bin)
    assert launch.argv.count("--analytics-log") == 1
    (watch,) = launch.watches
    assert (watch.path, watch.from_end) == (theirs, True)
    assert any(str(theirs) in note for note in launch.notes)


def test_users_analytics_log_from_the_environment_is_tailed(project, run_dir, fake_bin, tmp_path):
    theirs = tmp_path / "env.jsonl"
    launch = plan([], project, run_dir, fake_bin, env={"AIDER_ANALYTICS_LOG": str(theirs)})
    assert "--analytics-log" not in launch.argv
    assert (launch.watches[0].path, launch.watches[0].from_end) == (theirs, True)


def test_map_cap_appends_map_tokens_after_the_users_args(project, run_dir, fake_bin):
    launch = plan(["--model", "openai/gpt-4o", "calc.py"], project, run_dir, fake_bin, map_tokens="4600")
    argv = launch.argv
    at = argv.index("--map-tokens")
    assert argv[at + 1] == str(largest_fitting(4_600))
    assert at > argv.index("calc.py")


def test_map_tokens_goes_before_a_double_dash(project, run_dir, fake_bin):
    argv = plan(["calc.py", "--", "--weird-file"], project, run_dir, fake_bin, map_tokens="4600").argv
    assert argv.index("--map-tokens") < argv.index("--") < argv.index("--weird-file")
    assert argv[-2:] == ["--", "--weird-file"]


def test_map_cap_watches_an_llm_history_for_the_maps_size(project, run_dir, fake_bin):
    launch = plan([], project, run_dir, fake_bin, map_tokens="4600")
    history = run_dir / "aider.llm.history"
    assert launch.argv[launch.argv.index("--llm-history-file") + 1] == str(history)
    watch = launch.watches[1]
    assert (watch.path, watch.from_end) == (history, False)
    assert isinstance(watch.make_parser(history), LlmHistoryMapParser)


def test_users_llm_history_is_reused_from_its_end(project, run_dir, fake_bin, tmp_path):
    theirs = tmp_path / "llm.history"
    launch = plan(["--llm-history-file", str(theirs)], project, run_dir, fake_bin, map_tokens="4600")
    assert launch.argv.count("--llm-history-file") == 1
    assert (launch.watches[1].path, launch.watches[1].from_end) == (theirs, True)


def test_no_map_cap_leaves_map_tokens_alone(project, run_dir, fake_bin):
    argv = plan(["--map-tokens", "8192"], project, run_dir, fake_bin).argv
    assert argv.count("--map-tokens") == 1
    assert "--llm-history-file" not in argv


def test_users_map_tokens_over_the_cap_refuses_the_run(project, run_dir, fake_bin):
    with pytest.raises(ConfigError, match="map_tokens cap 4600"):
        plan(["--map-tokens", "4096"], project, run_dir, fake_bin, map_tokens="4600")


def test_users_map_tokens_over_the_cap_is_clamped_when_configured(project, run_dir, fake_bin):
    launch = plan(["--map-tokens", "4096"], project, run_dir, fake_bin, map_tokens="4600", map_over_cap="clamp")
    assert launch.argv[-4:-2] == ["--map-tokens", str(largest_fitting(4_600))]  # ours come last, so aider takes them
    assert any("clamped" in note for note in launch.notes)


def test_configured_args_come_before_the_users(project, run_dir, fake_bin):
    toml = "[agents.aider]\nargs = ['--no-auto-commits']\n"
    argv = plan(["calc.py"], project, run_dir, fake_bin, toml=toml).argv
    assert argv[1:3] == ["--no-auto-commits", "calc.py"]


def test_configured_command_is_looked_up_on_path(project, run_dir, fake_bin):
    (fake_bin / "aider").rename(fake_bin / "my-aider")
    toml = "[agents.aider]\ncommand = 'my-aider'\n"
    assert plan([], project, run_dir, fake_bin, toml=toml).argv[0] == str(fake_bin / "my-aider")


def test_fallback_model_comes_from_the_command_line(project, run_dir, fake_bin):
    assert plan(["--model", "sonnet"], project, run_dir, fake_bin).fallback_model == "anthropic/claude-sonnet-4-5"


def test_fallback_model_sees_configured_args(project, run_dir, fake_bin):
    toml = "[agents.aider]\nargs = ['--4o']\n"
    assert plan([], project, run_dir, fake_bin, toml=toml).fallback_model == "openai/gpt-4o"


def test_polite_stop_is_two_interrupts(project, run_dir, fake_bin):
    stops = plan([], project, run_dir, fake_bin).polite_stop
    assert [sig for sig, _ in stops] == [signal.SIGINT, signal.SIGINT]


@pytest.mark.parametrize("args", [["--message", "fix it"], ["-m", "fix it"], ["--msg=fix it"], ["-f", "task.md"]])
def test_one_message_is_stopped_with_sigterm_not_a_traceback_making_interrupt(project, run_dir, fake_bin, args):
    assert [sig for sig, _ in plan(args, project, run_dir, fake_bin).polite_stop] == [signal.SIGTERM]


def test_plan_env_is_a_copy_of_the_given_env(project, run_dir, fake_bin):
    env = {"PATH": str(fake_bin), "OPENAI_API_KEY": "x"}
    launch = ADAPTER.plan([], settings(project), run_dir, env, "RUN1")
    assert launch.env == env
    assert launch.env is not env


def test_plan_names_what_it_cannot_see(project, run_dir, fake_bin):
    assert any("weak-model" in spot for spot in plan([], project, run_dir, fake_bin).blind_spots)


def test_aider_missing_from_path_is_agent_not_found_exit_127(project, run_dir, tmp_path):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    with pytest.raises(AgentNotFound, match="pip install aider-chat") as err:
        ADAPTER.plan([], settings(project), run_dir, {"PATH": str(empty)}, "RUN1")
    assert err.value.exit_code == 127


def test_configured_command_that_cannot_run_is_exit_126(project, run_dir, fake_bin, tmp_path):
    script = tmp_path / "not-executable"
    script.write_text("#!/bin/sh\n")
    toml = f"[agents.aider]\ncommand = '{script}'\n"
    with pytest.raises(AgentNotExecutable) as err:
        plan([], project, run_dir, fake_bin, toml=toml)
    assert err.value.exit_code == 126
