"""Who a run is charged to and which project it belongs to."""

from capguard.config import identity


def test_project_is_the_git_root_above_the_working_directory(tmp_path):
    (tmp_path / "repo" / ".git").mkdir(parents=True)
    (tmp_path / "repo" / "src" / "deep").mkdir(parents=True)
    assert identity.project(tmp_path / "repo" / "src" / "deep") == str(tmp_path / "repo")


def test_project_outside_a_repository_is_the_directory_itself(tmp_path):
    assert identity.project(tmp_path) == str(tmp_path)


def test_a_configured_user_wins(tmp_path):
    assert identity.user(tmp_path, "dev@example.com") == "dev@example.com"
