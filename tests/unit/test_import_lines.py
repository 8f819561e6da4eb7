"""The budget line an imported run is charged to: its project's .capguard.toml, else the user's config."""

from __future__ import annotations

from pathlib import Path

from capguard.cli import import_cmd
from capguard.config import settings as settings_module
from capguard.config import trust


def test_each_project_gets_the_line_of_the_repo_file_that_applies_and_settings_load_once_per_file(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("CAPGUARD_CONFIG", raising=False)
    monkeypatch.delenv("CAPGUARD_TEAM_CONFIG", raising=False)
    monkeypatch.delenv("CAPGUARD_LINE", raising=False)
    user_file = tmp_path / "config" / "capguard" / "config.toml"
    user_file.parent.mkdir(parents=True)
    user_file.write_text('line = "personal"\n')
    team = tmp_path / "team"
    (team / "svc" / "deep").mkdir(parents=True)
    (team / ".capguard.toml").write_text('line = "team-a"\n')
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.delenv("CAPGUARD_HOME", raising=False)
    trust.trust(team / ".capguard.toml")  # an untrusted repo file may only tighten caps, not choose the line
    plain = [tmp_path / f"plain{i}" for i in range(3)]
    for folder in plain:
        folder.mkdir()
    monkeypatch.chdir(tmp_path)
    loads: list[Path | None] = []
    real = settings_module.load_settings

    def counting(*args, **kwargs):
        loads.append(kwargs.get("cwd"))
        return real(*args, **kwargs)

    monkeypatch.setattr(import_cmd, "load_settings", counting)
    line_of = import_cmd._line_resolver(None, {})
    assert line_of(str(team)) == "team-a"
    assert line_of(str(team / "svc" / "deep")) == "team-a"
    assert [line_of(str(folder)) for folder in plain] == ["personal"] * 3
    assert line_of(str(tmp_path / "gone")) == "personal"  # a project folder no longer there: the user's line
    assert line_of(None) == "personal"
    assert len(loads) == 2  # one load for the repo file, one for the folders no repo file covers
    assert import_cmd._line_resolver("explicit", {})(str(team)) == "explicit"
