"""Finding the cgroup2 mount and capguard's own cgroup, and telling whose a leftover cgroup is, from text."""

from __future__ import annotations

from capguard.supervisor import cgroup

MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""


def test_cgroup2_mount_is_found_whatever_its_path():
    assert cgroup.cgroup2_mount(MOUNTINFO) == "/sys/fs/cgroup/unified"
    systemd = "30 24 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"
    assert cgroup.cgroup2_mount(systemd) == "/sys/fs/cgroup"


def test_cgroup2_mount_path_with_a_space_is_unescaped():
    assert cgroup.cgroup2_mount("41 31 0:38 / /mnt/my\\040cg rw - cgroup2 none rw\n") == "/mnt/my cg"


def test_no_cgroup2_mount_is_none():
    assert cgroup.cgroup2_mount(MOUNTINFO.replace("cgroup2 cgroup2", "cgroup cgroup")) is None
    assert cgroup.cgroup2_mount("") is None


def test_own_path_is_the_v2_line():
    assert (
        cgroup.own_path("4:memory:/x\n0::/user.slice/user-1000.slice/session-2.scope\n")
        == "/user.slice/user-1000.slice/session-2.scope"
    )
    assert cgroup.own_path("0::/\n") == "/"
    assert cgroup.own_path("4:memory:/x\n") is None  # v1 only


def test_a_leftover_cgroup_names_its_capguard():
    assert cgroup._owner("capguard-01m96jn9500w4d5jz3y2cknydn-4242-36866") == (4242, 36866)
    assert cgroup._owner("capguard-01m96jn9500w4d5jz3y2cknydn-4242-None") == (4242, None)
    assert cgroup._owner("capguard-x-y") is None
    assert cgroup._owner("session-2.scope") is None


def test_cgroups_can_be_switched_off(monkeypatch):
    monkeypatch.setenv("CAPGUARD_CGROUP", "off")
    assert cgroup.disabled() and cgroup.parent_dir() is None and cgroup.create("run") is None
    monkeypatch.setenv("CAPGUARD_CGROUP", "auto")
    assert not cgroup.disabled()
