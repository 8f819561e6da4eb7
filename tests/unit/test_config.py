"""config.py: defaults < user file < nearest .capguard.toml < CAPGUARD_* < flags, each value with its origin."""

from __future__ import annotations

import dataclasses
import os
from decimal import Decimal
from pathlib import Path

import pytest

from capguard.config import settings as config
from capguard.config import trust
from capguard.config.settings import load_settings
from capguard.core.caps import Caps
from capguard.core.enums import UnpricedPolicy
from capguard.core.errors import ConfigError
from capguard.core.pricing import ModelPrice
from capguard.core.team import TeamConfig


@pytest.fixture
def project(tmp_path):
    folder = tmp_path / "project"
    folder.mkdir()
    return folder


@pytest.fixture
def user_file():
    path = Path(os.environ["XDG_CONFIG_HOME"]) / "capguard" / "config.toml"
    path.parent.mkdir(parents=True)
    return path


def load(project: Path, agent: str | None = None, *, env: dict | None = None, flags: dict | None = None):
    # the environment given to load_settings is the whole truth, config-file locations included
    env = dict(env or {})
    env.setdefault("XDG_CONFIG_HOME", os.environ["XDG_CONFIG_HOME"])
    return load_settings(agent, flags=flags, env=env, cwd=project)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def trusted(path: Path, text: str) -> Path:
    """A repo file the user trusted (`capguard trust`): it may loosen the run and set every key."""
    trust.trust(write(path, text))
    return path


def test_defaults_apply_when_nothing_is_configured(project):
    settings = load(project)
    assert settings.caps.usd_micro is None
    assert settings.caps.warn_at == 0.8
    assert settings.supervise.grace_s == 3.0
    assert settings.caps.unpriced == "stop"
    assert settings.launch.map_over_cap == "refuse"
    assert settings.origin("usd") == "default"
    assert settings.files == []


def test_user_file_under_xdg_config_home_is_read(project, user_file):
    write(user_file, "usd = 5\n")
    settings = load(project)
    assert settings.caps.usd_micro == 5_000_000
    assert settings.origin("usd") == str(user_file)


def test_capguard_config_names_the_user_file(project, tmp_path, monkeypatch):
    chosen = write(tmp_path / "team.toml", "tokens = '500k'\n")
    monkeypatch.setenv("CAPGUARD_CONFIG", str(chosen))
    settings = load_settings(None, cwd=project)
    assert settings.caps.tokens == 500_000
    assert settings.files == [chosen]


def test_capguard_config_in_the_given_env_names_the_user_file(project, tmp_path):
    chosen = write(tmp_path / "team.toml", "tokens = '500k'\n")
    settings = load(project, env={"CAPGUARD_CONFIG": str(chosen)})
    assert settings.caps.tokens == 500_000


def test_capguard_config_pointing_nowhere_is_an_error_naming_the_variable(project, tmp_path, monkeypatch):
    missing = tmp_path / "nope.toml"
    monkeypatch.setenv("CAPGUARD_CONFIG", str(missing))
    with pytest.raises(ConfigError, match="CAPGUARD_CONFIG") as err:
        load_settings(None, cwd=project)
    assert str(missing) in str(err.value)


def test_project_file_beats_user_file(project, user_file):
    write(user_file, "usd = 5\nwall = '1h'\n")
    project_file = write(project / ".capguard.toml", "usd = 2\n")
    settings = load(project)
    assert settings.caps.usd_micro == 2_000_000
    assert settings.origin("usd") == str(project_file)
    assert settings.caps.wall_s == 3600.0
    assert settings.files == [user_file, project_file]


def test_project_file_is_found_from_a_subdirectory(project):
    write(project / ".capguard.toml", "steps = 7\n")
    deep = project / "src" / "pkg"
    deep.mkdir(parents=True)
    assert load(deep).caps.steps == 7


def test_nearest_project_file_wins_over_a_farther_one(project):
    write(project / ".capguard.toml", "steps = 7\n")
    inner = project / "sub"
    inner.mkdir()
    write(inner / ".capguard.toml", "steps = 3\n")
    assert load(inner).caps.steps == 3


def test_user_file_that_is_also_the_project_file_is_read_once(project, monkeypatch):
    project_file = write(project / ".capguard.toml", "steps = 7\n")
    monkeypatch.setenv("CAPGUARD_CONFIG", str(project_file))
    assert load_settings(None, cwd=project).files == [project_file]


def test_environment_beats_project_file(project):
    write(project / ".capguard.toml", "usd = 2\n")
    settings = load(project, env={"CAPGUARD_USD": "3"})
    assert settings.caps.usd_micro == 3_000_000
    assert settings.origin("usd") == "environment CAPGUARD_USD"


def test_flags_beat_environment(project):
    settings = load(project, env={"CAPGUARD_USD": "3"}, flags={"usd": "4"})
    assert settings.caps.usd_micro == 4_000_000
    assert settings.origin("usd") == "--usd"


def test_flag_origin_uses_the_dashed_flag_name(project):
    assert load(project, flags={"map_tokens": "2k"}).origin("map_tokens") == "--map-tokens"


def test_flag_left_unset_does_not_override(project):
    write(project / ".capguard.toml", "usd = 2\n")
    assert load(project, flags={"usd": None}).caps.usd_micro == 2_000_000


def test_empty_environment_variable_is_ignored(project):
    write(project / ".capguard.toml", "usd = 2\n")
    assert load(project, env={"CAPGUARD_USD": ""}).caps.usd_micro == 2_000_000


def test_os_environment_is_used_when_no_env_is_given(project, monkeypatch):
    monkeypatch.setenv("CAPGUARD_STEPS", "9")
    assert load_settings(None, cwd=project).caps.steps == 9


def test_off_in_project_file_unsets_a_user_cap(project, user_file):
    write(user_file, "usd = 5\n")
    project_file = trusted(project / ".capguard.toml", "usd = 'off'\n")
    settings = load(project)
    assert settings.caps.usd_micro is None
    assert settings.origin("usd") == str(project_file)


@pytest.mark.parametrize("word", ["off", "OFF", "none", "unlimited"])
def test_off_from_a_flag_unsets_an_environment_cap(project, word):
    assert load(project, env={"CAPGUARD_WALL": "30m"}, flags={"wall": word}).caps.wall_s is None


def test_off_from_environment_unsets_a_file_cap(project):
    write(project / ".capguard.toml", "tokens = '1M'\n")
    assert load(project, env={"CAPGUARD_TOKENS": "off"}).caps.tokens is None


def test_zero_cap_is_refused_with_a_hint_to_use_off(project):
    with pytest.raises(ConfigError, match='use "off"'):
        load(project, flags={"usd": "0"})


def test_bad_value_in_a_file_names_the_file_and_key(project):
    project_file = write(project / ".capguard.toml", "wall = 'forever'\n")
    with pytest.raises(ConfigError) as err:
        load(project)
    assert str(project_file) in str(err.value)
    assert "wall" in str(err.value)


def test_bad_environment_value_names_the_variable(project):
    with pytest.raises(ConfigError, match="CAPGUARD_TOKENS"):
        load(project, env={"CAPGUARD_TOKENS": "lots"})


def test_bad_flag_value_names_the_flag(project):
    with pytest.raises(ConfigError, match="--warn-at"):
        load(project, flags={"warn_at": "2"})


def test_unknown_key_in_a_file_names_the_file_and_key(project):
    project_file = write(project / ".capguard.toml", "dollars = 5\n")
    with pytest.raises(ConfigError, match="dollars: unknown key") as err:
        load(project)
    assert str(project_file) in str(err.value)


def test_invalid_toml_names_the_file(project):
    project_file = write(project / ".capguard.toml", "usd = = 5\n")
    with pytest.raises(ConfigError, match="not valid TOML") as err:
        load(project)
    assert str(project_file) in str(err.value)


def test_unreadable_file_is_a_config_error(project, tmp_path):
    folder = tmp_path / "a-directory.toml"
    folder.mkdir()
    with pytest.raises(ConfigError, match="cannot read"):
        config.read_toml(folder)


def test_agent_section_applies_to_that_agent(project):
    project_file = write(project / ".capguard.toml", "usd = 5\n[agents.aider]\nusd = 1\n")
    settings = load(project, "aider")
    assert settings.caps.usd_micro == 1_000_000
    assert settings.origin("usd") == f"{project_file} [agents.aider]"


def test_agent_section_does_not_apply_to_another_agent(project):
    write(project / ".capguard.toml", "usd = 5\n[agents.aider]\nusd = 1\n")
    assert load(project, "claude").caps.usd_micro == 5_000_000


def test_agent_section_does_not_apply_without_an_agent(project):
    write(project / ".capguard.toml", "[agents.aider]\nusd = 1\n")
    assert load(project, None).caps.usd_micro is None


def test_agent_section_of_another_agent_is_still_validated(project):
    write(project / ".capguard.toml", "[agents.claude]\nusd = 'lots'\n")
    with pytest.raises(ConfigError, match=r"agents\.claude"):
        load(project, "aider")


def test_unknown_agent_section_is_an_error(project):
    write(project / ".capguard.toml", "[agents.cursor]\nusd = 1\n")
    with pytest.raises(ConfigError, match=r"agents\.cursor: unknown agent"):
        load(project, "aider")


def test_unknown_key_in_an_agent_section_names_it(project):
    write(project / ".capguard.toml", "[agents.aider]\nbudget = 1\n")
    with pytest.raises(ConfigError, match=r"agents\.aider\.budget: unknown key"):
        load(project, "aider")


def test_agent_command_and_args_come_from_the_agent_section(project):
    trusted(
        project / ".capguard.toml", "[agents.aider]\ncommand = 'my-aider'\nargs = '--no-auto-commits --yes-always'\n"
    )
    settings = load(project, "aider")
    assert settings.launch.command == "my-aider"
    assert settings.launch.args == ("--no-auto-commits", "--yes-always")


def test_agent_args_as_a_toml_list_are_kept(project):
    trusted(project / ".capguard.toml", "[agents.aider]\nargs = ['--model', 'sonnet']\n")
    assert load(project, "aider").launch.args == ("--model", "sonnet")


def test_command_is_not_a_top_level_key(project):
    write(project / ".capguard.toml", "command = 'aider'\n")
    with pytest.raises(ConfigError, match=r"command: belongs in an agent.s section"):
        load(project, "aider")


def test_command_is_not_read_from_the_environment(project):
    assert load(project, "aider", env={"CAPGUARD_COMMAND": "evil"}).launch.command is None


def test_project_agent_section_beats_user_agent_section(project, user_file):
    write(user_file, "[agents.aider]\nsteps = 10\n")
    write(project / ".capguard.toml", "[agents.aider]\nsteps = 4\n")
    assert load(project, "aider").caps.steps == 4


def test_price_table_is_read_per_model(project):
    trusted(project / ".capguard.toml", '[prices."openai/my-model"]\ninput = 1\noutput = 2.5\ncache_read = 0.1\n')
    price = load(project).prices["openai/my-model"]
    assert price == ModelPrice(input=Decimal("1"), output=Decimal("2.5"), cache_read=Decimal("0.1"))


def test_project_price_beats_user_price_for_the_same_model(project, user_file):
    write(user_file, '[prices."m"]\ninput = 1\noutput = 1\n')
    trusted(project / ".capguard.toml", '[prices."m"]\ninput = 9\noutput = 9\n')
    assert load(project).prices["m"].input == Decimal("9")


def test_price_without_output_is_an_error(project):
    write(project / ".capguard.toml", '[prices."m"]\ninput = 1\n')
    with pytest.raises(ConfigError, match="prices.m: missing output"):
        load(project)


def test_price_with_unknown_field_names_it(project):
    write(project / ".capguard.toml", '[prices."m"]\ninput = 1\noutput = 1\ncached = 1\n')
    with pytest.raises(ConfigError, match=r"prices\.m\.cached: unknown key"):
        load(project)


def test_negative_price_is_an_error(project):
    write(project / ".capguard.toml", '[prices."m"]\ninput = -1\noutput = 1\n')
    with pytest.raises(ConfigError, match=r"prices\.m\.input"):
        load(project)


def test_price_that_is_not_a_number_is_an_error(project):
    write(project / ".capguard.toml", '[prices."m"]\ninput = "cheap"\noutput = 1\n')
    with pytest.raises(ConfigError, match=r"prices\.m\.input: 'cheap' is not a number"):
        load(project)


def test_price_that_is_nan_is_a_config_error_naming_file_and_key(project):
    project_file = write(project / ".capguard.toml", '[prices."m"]\ninput = nan\noutput = 1\n')
    with pytest.raises(ConfigError, match=r"prices\.m\.input") as err:
        load(project)
    assert str(project_file) in str(err.value)


def test_prices_that_are_not_a_table_are_an_error(project):
    write(project / ".capguard.toml", "prices = 3\n")
    with pytest.raises(ConfigError, match="prices: expected tables"):
        load(project)


def test_caps_are_built_from_the_settings(project):
    settings = load(
        project,
        flags={
            "usd": "$5",
            "tokens": "1.5M",
            "wall": "30m",
            "steps": "40",
            "map_tokens": "4k",
            "warn_at": "90%",
            "unpriced": "warn",
        },
    )
    assert settings.caps == Caps(
        usd_micro=5_000_000,
        tokens=1_500_000,
        wall_s=1800.0,
        steps=40,
        map_tokens=4_000,
        stuck=5,
        warn_at=0.9,
        unpriced="warn",
    )


def test_unpriced_policy_must_be_known(project):
    with pytest.raises(ConfigError, match="unpriced"):
        load(project, flags={"unpriced": "ignore"})


def test_boolean_settings_read_from_the_environment(project):
    assert load(project, env={"CAPGUARD_TITLE": "false"}).output.title is False


def test_agent_flavoured_variable_is_a_cap_but_capguards_own_wins(project, monkeypatch):
    monkeypatch.setitem(config.AGENT_ENV, "aider", {"AIDER_BUDGET_USD": "usd"})
    settings = load(project, "aider", env={"AIDER_BUDGET_USD": "7"})
    assert settings.caps.usd_micro == 7_000_000
    assert settings.origin("usd") == "environment AIDER_BUDGET_USD"
    both = load(project, "aider", env={"AIDER_BUDGET_USD": "7", "CAPGUARD_USD": "2"})
    assert both.caps.usd_micro == 2_000_000


def test_map_cap_can_be_turned_off(project):
    write(project / ".capguard.toml", "map_tokens = 'off'\n")
    assert load(project, flags={}).caps.map_tokens is None


def test_map_cap_of_zero_means_no_map(project):
    assert load(project, flags={"map_tokens": "0"}).caps.map_tokens == 0


def test_path_settings_must_be_strings(project):
    write(project / ".capguard.toml", "report_json = 5\n")
    with pytest.raises(ConfigError, match="report_json: 5 is not a string"):
        load(project)


def test_agent_args_must_be_strings(project):
    write(project / ".capguard.toml", "[agents.aider]\nargs = ['--yes', 3]\n")
    with pytest.raises(ConfigError, match=r"\[agents\.aider\]: args"):
        load(project, "aider")


def test_price_entry_that_is_not_a_table_is_an_error(project):
    write(project / ".capguard.toml", "[prices]\nm = 3\n")
    with pytest.raises(ConfigError, match="prices.m: expected a table"):
        load(project)


def test_agents_that_is_not_a_table_is_an_error(project):
    write(project / ".capguard.toml", "agents = 3\n")
    with pytest.raises(ConfigError, match=r"agents: expected tables such as \[agents\.aider\]"):
        load(project, "aider")


def test_agent_entry_that_is_not_a_table_is_an_error(project):
    write(project / ".capguard.toml", "[agents]\naider = 3\n")
    with pytest.raises(ConfigError, match="agents.aider: expected a table"):
        load(project, "aider")


def test_a_table_with_a_parser_of_its_own_gets_every_layer_in_order(project, user_file, monkeypatch):
    seen = []
    monkeypatch.setitem(config.TABLES, "team", lambda tables: seen.append(tables) or TeamConfig(monthly_usd=1))
    write(user_file, "[team]\nmonthly_usd = 200\n")
    trusted(project / ".capguard.toml", "usd = 1\n[team]\nmonthly_usd = 100\n")
    settings = load(project)
    assert settings.caps.usd_micro == 1_000_000
    assert seen == [[(str(user_file), {"monthly_usd": 200}), (str(project / ".capguard.toml"), {"monthly_usd": 100})]]
    assert settings.team == TeamConfig(monthly_usd=1)


def test_every_key_fills_one_field_of_its_section_and_every_field_is_a_key():
    filled = {(spec.section, spec.field_name(key)) for key, spec in config.KEYS.items()}
    assert len(filled) == len(config.KEYS)
    # read from the ledger as a run goes, not configured; and the [models] table's caps (Settings.models)
    not_settings = {("caps", "monthly_remaining_micro"), ("caps", "models")}
    fields = {(name, f.name) for name, cls in config.SECTIONS.items() for f in dataclasses.fields(cls)}
    assert filled == fields - not_settings
    assert {f.name for f in dataclasses.fields(config.Settings)} >= {*config.SECTIONS, *config.TABLES}


def test_values_are_parsed_to_their_fields_types(project):
    trusted(
        project / ".capguard.toml",
        'usd = "$2"\nwall = "1h"\nunpriced = "WARN"\ngrace = 1\nquiet = "yes"\nledger = "/tmp/l.db"\n'
        '[agents.claude]\nargs = "--verbose --debug"\ntask_budget = "50k"\neffort = "High"\n',
    )
    settings = load(project, "claude")
    assert settings.caps == Caps(usd_micro=2_000_000, wall_s=3600.0, stuck=5, unpriced=UnpricedPolicy.WARN)
    assert type(settings.caps.unpriced) is UnpricedPolicy
    assert settings.supervise == config.Supervision(grace_s=1.0, kill_after_s=2.0, poll=False, meter="files")
    assert settings.output == config.Output(title=True, quiet=True, report_json=None, notify="off")
    assert settings.charge == config.Charge(ledger="/tmp/l.db", user=None, line=None)
    assert settings.launch.args == ("--verbose", "--debug") and settings.launch.task_budget == 50_000
    assert settings.launch.effort == "high" and settings.launch.map_over_cap == "refuse"
    assert settings.origin("task_budget") == f"{project / '.capguard.toml'} [agents.claude]"
    assert settings.origin("tokens") == "default"
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.caps = Caps()  # type: ignore[misc]


def test_empty_agent_flavoured_variable_is_ignored(project, monkeypatch):
    monkeypatch.setitem(config.AGENT_ENV, "aider", {"AIDER_BUDGET_USD": "usd"})
    assert load(project, "aider", env={"AIDER_BUDGET_USD": ""}).caps.usd_micro is None


def test_price_table_takes_the_one_hour_cache_write_rate(project):
    trusted(project / ".capguard.toml", '[prices."claude-x"]\ninput = 1\noutput = 2\ncache_write_1h = 2.5\n')
    assert load(project).prices["claude-x"].cache_write_1h == Decimal("2.5")


def test_models_table_gives_caps_per_model_to_the_run(project):
    trusted(project / ".capguard.toml", '[models]\ndeny = ["*-preview"]\n[models."claude-opus-*"]\nusd = 2\n')
    settings = load(project)
    assert settings.models.deny == ("*-preview",)
    (cap,) = settings.caps.models
    assert (cap.pattern, cap.usd_micro) == ("claude-opus-*", 2_000_000)


def test_a_bad_models_entry_names_the_file_and_key(project):
    write(project / ".capguard.toml", '[models."claude-opus-*"]\nusd = "two"\n')
    with pytest.raises(ConfigError, match=r'\.capguard\.toml: models\."claude-opus-\*"\.usd: .*not an amount'):
        load(project)
