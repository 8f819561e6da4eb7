"""Private modes whatever the umask: 0700 folders, 0600 files; an open one of ours is tightened, once, with a note."""

from __future__ import annotations

import io
import os
import stat

import pytest

from capguard.private_files import private_dir, private_file, write_private


@pytest.fixture(params=[0o000, 0o022, 0o277])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_new_folders_and_files_are_private(tmp_path, umask):
    folder = private_dir(tmp_path / "a" / "capguard")
    assert mode(folder) == 0o700
    assert mode(private_file(folder / "ledger.db")) == 0o600
    write_private(folder / "report.json", b"{}")
    assert mode(folder / "report.json") == 0o600 and (folder / "report.json").read_bytes() == b"{}"
    assert sorted(p.name for p in folder.iterdir()) == ["ledger.db", "report.json"]  # no temporary left


def test_replacing_an_open_file_gives_a_private_one(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("old")
    os.chmod(target, 0o666)
    write_private(target, b"new")
    assert mode(target) == 0o600 and target.read_text() == "new"


def test_an_open_folder_of_ours_is_tightened_with_one_note(tmp_path):
    folder = tmp_path / "capguard"
    folder.mkdir()
    os.chmod(folder, 0o755)
    said = io.StringIO()
    private_dir(folder, stderr=said)
    private_dir(folder, stderr=said)  # already private: nothing more to say
    assert mode(folder) == 0o700
    assert said.getvalue() == f"capguard: note: {folder} was open to other users (mode 0755); capguard made it 0700\n"


def test_a_read_only_file_stays_read_only_when_tightened(tmp_path):
    ledger = tmp_path / "ledger.db"
    ledger.touch()
    os.chmod(ledger, 0o444)
    private_file(ledger, stderr=None)
    assert mode(ledger) == 0o400


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "status.json"
    target.write_text("old")

    def full_disk(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("capguard.private_files.os.replace", full_disk)
    with pytest.raises(OSError):
        write_private(target, b"new")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["status.json"]


def test_a_file_where_the_data_folder_goes_is_a_data_dir_error_naming_it(tmp_path):
    from capguard.core.errors import DataDirError

    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(DataDirError, match=f"{blocker} is a file\\); move {blocker} away") as caught:
        private_dir(blocker / "capguard")
    assert caught.value.exit_code == 3
    with pytest.raises(DataDirError):
        private_dir(blocker)  # the file itself where a folder should be
