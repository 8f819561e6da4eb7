"""budget/task_config.py: a library task's caps from the config, then its run row, then Budget's arguments."""

from __future__ import annotations

import pytest

from capguard.budget import task_config
from capguard.config.settings import load_settings
from capguard.core.enums import UnpricedPolicy
from capguard.core.errors import ConfigError


@pytest.fixture
def settings(tmp_path):
    def load(toml: str):
        path = tmp_path / "config.toml"
        path.write_text(toml)
        return load_settings("anthropic-sdk", env={"CAPGUARD_CONFIG": str(path)}, cwd=tmp_path)

    return load


def test_arguments_beat_the_run_row_which_beats_the_config(settings):
    loaded = settings('usd = 9\nsteps = 3\n[agents.anthropic-sdk]\ntask_budget = "30k"\n')
    fresh = task_config.resolve(loaded, None, task_config.parse_arguments({"steps": "7", "tokens": None}))
    assert (fresh.caps.usd_micro, fresh.caps.steps, fresh.caps.stuck, fresh.task_budget) == (9_000_000, 7, None, 30_000)
    row = {"caps": {"usd": 2.5, "tokens": 1000, "steps": 4, "wall_s": None, "unpriced": "warn", "task_budget": None}}
    resumed = task_config.resolve(loaded, row, task_config.parse_arguments({"usd": "$1"}))
    assert (resumed.caps.usd_micro, resumed.caps.tokens, resumed.caps.steps) == (1_000_000, 1000, 4)
    assert resumed.caps.unpriced == UnpricedPolicy.WARN and resumed.task_budget is None


def test_a_bad_argument_names_itself_and_a_small_configured_task_budget_names_its_file(settings):
    with pytest.raises(ValueError, match=r"Budget\(task_budget=5000\): task_budget must be at least 20,000"):
        task_config.parse_arguments({"task_budget": 5000})
    loaded = settings("[agents.anthropic-sdk]\ntask_budget = 5000\n")
    with pytest.raises(ConfigError, match=r"config.toml \[agents.anthropic-sdk\]: task_budget: .*20,000"):
        task_config.resolve(loaded, None, {})


def test_a_resumed_task_stays_charged_to_its_row(settings, tmp_path):
    loaded = settings('user = "me@example.com"\nline = "infra"\n')
    assert task_config.charged_to(loaded, tmp_path, None, "T1", None, None) == ("me@example.com", "infra")
    assert task_config.charged_to(loaded, tmp_path, None, "T1", "you@example.com", "") == ("you@example.com", None)
    row = {"user": "old@example.com", "line": None}
    assert task_config.charged_to(loaded, tmp_path, row, "T1", None, None) == ("old@example.com", None)
    with pytest.raises(ValueError, match=r"Budget.resume\('T1', user='me@example.com'\): the task is charged to"):
        task_config.charged_to(loaded, tmp_path, row, "T1", "me@example.com", None)
