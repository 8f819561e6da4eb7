"""Cap suggestions from past runs: p90 plus headroom, what they would have stopped, TOML that config accepts."""

from __future__ import annotations

import sys

import pytest

from capguard.config.settings import load_settings
from capguard.reports.aggregate import Part, Run
from capguard.reports.suggest import Sample, as_json, round_up, samples, suggest, toml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def sample(
    i: int,
    *,
    agent="claude",
    cost=1.0,
    tokens=100_000,
    output=5_000,
    steps=10,
    wall=600.0,
    line=None,
    project="/src/app",
) -> Sample:
    return Sample(f"r{i}", agent, line, project, int(cost * 1e6), tokens, output, steps, wall)


def ten(agent="claude", **kw) -> list[Sample]:
    """Ten runs whose figures grow 1..10: the p90 is the 9th."""
    return [
        sample(i, agent=agent, cost=i, tokens=i * 100_000, output=i * 4_000, steps=i * 3, wall=i * 60.0, **kw)
        for i in range(1, 11)
    ]


@pytest.mark.parametrize(
    "value, expected",
    [(1234, 1300), (0.0123, 0.013), (9.0, 9.0), (10.8, 11), (99.1, 100), (0, 0), (3 * 1.1, 3.3), (5.01, 5.1)],
)
def test_round_up_to_two_significant_figures(value, expected):
    assert round_up(value) == expected


def test_caps_are_p90_plus_headroom_and_count_the_runs_they_would_stop():
    (s,), few = suggest(ten(), headroom=0.2)
    assert few == []
    assert s.runs == 10 and s.p90 == {"usd": 9.0, "tokens": 900_000, "steps": 27, "wall": 540.0, "task_budget": 36_000}
    assert s.caps == {"usd": 11.0, "tokens": 1_100_000, "steps": 33, "wall": 650.0, "task_budget": 44_000}
    assert s.would_stop == {"usd": 0, "tokens": 0, "steps": 0, "wall": 0, "task_budget": 0}
    (tight,), _ = suggest(ten(), headroom=0)
    assert tight.caps["usd"] == 9.0 and tight.would_stop["usd"] == 2  # a cap stops a run that reaches it
    assert tight.would_stop_any == 2


def test_task_budget_only_where_a_task_budget_exists_and_at_least_20000_tokens():
    small = [sample(i, output=1_000) for i in range(5)]
    (s,), _ = suggest(small)
    assert s.caps["task_budget"] == 20_000
    (library,), _ = suggest(ten(agent="anthropic-sdk"))  # Budget(task_budget=...) tasks
    assert library.caps["task_budget"] == 44_000
    (a,), _ = suggest(ten(agent="aider"))
    assert "task_budget" not in a.caps


def test_wall_only_from_supervised_runs_and_too_few_runs_are_reported():
    imported = [sample(i, wall=None) for i in range(10)]
    (s,), _ = suggest(imported)
    assert "wall" not in s.caps and s.wall_runs == 0 and "usd" in s.caps
    made, few = suggest(ten() + [sample(99, agent="aider")], min_runs=5)
    assert [m.agent for m in made] == ["claude"] and few == [("aider", None, 1)]


def test_runs_without_a_reply_teach_nothing_and_are_left_out():
    junk = [sample(100 + i, cost=0, tokens=0, output=0, steps=0, wall=2.0) for i in range(20)]
    (s,), _ = suggest(ten() + junk, headroom=0.2)
    assert s.runs == 10 and s.left_out == 20
    assert s.caps["usd"] == 11.0 and s.caps["wall"] == 650.0  # as from the ten real runs alone
    assert "# 10 runs (20 without a reply left out);" in "\n".join(toml([s], per="agent", headroom=0.2, period="all"))
    made, few = suggest(ten()[:3] + junk, min_runs=5)
    assert made == [] and few == [("claude", None, 3)]


def test_per_line_and_project_group_by_agent_and_scope():
    found = ten(line="infra") + ten(agent="aider", line="infra") + ten(line=None)
    made, _ = suggest(found, per="line")
    assert [(m.scope, m.agent) for m in made] == [(None, "claude"), ("infra", "aider"), ("infra", "claude")]
    with pytest.raises(ValueError):
        suggest(found, per="colour")


def test_samples_skip_running_runs_and_take_steps_from_the_run():
    runs = {
        "a": Run(
            "a",
            "u",
            "claude",
            "/p",
            None,
            "exited",
            None,
            "2026-11-01T10:00:00.000000Z",
            "2026-11-01T10:10:00.000000Z",
            steps=7,
        ),
        "b": Run("b", "u", "claude", "/p", None, "running", None, "2026-11-01T11:00:00.000000Z", None),
        "c": Run(
            "c",
            "u",
            "claude",
            "/p",
            None,
            "imported",
            None,
            "2026-11-01T12:00:00.000000Z",
            "2026-11-01T15:00:00.000000Z",
            steps=None,
        ),
    }
    parts = [Part("a", None, 2_000_000, 50, 5, 9), Part("c", None, 1_000_000, 40, 4, 3)]
    found = {s.run_id: s for s in samples(runs, parts)}
    assert set(found) == {"a", "c"}
    assert (found["a"].steps, found["a"].wall_s, found["a"].cost_micro) == (7, 600.0, 2_000_000)
    assert (found["c"].steps, found["c"].wall_s) == (3, None)


def test_toml_parses_and_config_accepts_every_value(tmp_path):
    made, _ = suggest(ten() + ten(agent="aider") + ten(agent="anthropic-sdk"))
    text = "\n".join(toml(made, per="agent", headroom=0.2, period="all time"))
    doc = tomllib.loads(text)
    assert set(doc["agents"]) == {"aider", "claude", "anthropic-sdk"}
    path = tmp_path / "config.toml"
    path.write_text(text)
    for agent in ("claude", "anthropic-sdk"):
        settings = load_settings(agent, env={"CAPGUARD_CONFIG": str(path)}, cwd=tmp_path)
        assert settings.caps.usd_micro == 11_000_000 and settings.caps.tokens == 1_100_000 and settings.caps.steps == 33
        assert settings.caps.wall_s == 650 and settings.launch.task_budget == 44_000
    assert "# 10 runs; these caps would have stopped 0 (0%)" in text


def test_project_snippets_name_their_file():
    made, _ = suggest(ten(project="/src/api"), per="project")
    text = "\n".join(toml(made, per="project", headroom=0.2, period="all time"))
    assert "# /src/api/.capguard.toml" in text
    assert as_json(made[0])["scope"] == "/src/api"
