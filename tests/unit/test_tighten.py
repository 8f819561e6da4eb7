"""tighten.py: what makes a run stricter, key class by key class; nothing else passes."""

from __future__ import annotations

import pytest

from capguard.core import tighten
from capguard.core.team import TeamConfig, parse_layers

CAP_KEYS = sorted(tighten.CAPS)


@pytest.mark.parametrize("key", CAP_KEYS)
def test_a_cap_may_be_added_or_lowered(key):
    assert tighten.stricter_or_same(key, 5, None)  # added where there was none
    assert tighten.stricter_or_same(key, 5, 10)  # lowered
    assert tighten.stricter_or_same(key, 10, 10)  # repeated


@pytest.mark.parametrize("key", CAP_KEYS)
def test_a_cap_may_not_be_raised_or_switched_off(key):
    assert not tighten.stricter_or_same(key, 11, 10)
    assert not tighten.stricter_or_same(key, None, 10)  # "off"


def test_a_map_cap_of_zero_is_the_strictest():
    assert tighten.stricter_or_same("map_tokens", 0, 1024)
    assert not tighten.stricter_or_same("map_tokens", 1024, 0)


@pytest.mark.parametrize("key", ["warn_at", "grace", "kill_after"])
def test_warnings_and_stop_timers_may_only_shorten(key):
    assert tighten.stricter_or_same(key, 0.5, 0.8)
    assert not tighten.stricter_or_same(key, 0.9, 0.8)
    assert not tighten.stricter_or_same(key, 3600.0, 3.0)


@pytest.mark.parametrize(
    "offered,current,ok",
    [
        ("stop", "warn", True),
        ("stop", "tokens-only", True),
        ("tokens-only", "warn", True),
        ("warn", "stop", False),
        ("tokens-only", "stop", False),
        ("warn", "tokens-only", False),
        ("stop", "stop", True),
    ],
)
def test_unpriced_policy_only_towards_stop(offered, current, ok):
    assert tighten.stricter_or_same("unpriced", offered, current) is ok


@pytest.mark.parametrize(
    "key,offered,current",
    [
        ("command", "/bin/sh", None),
        ("args", ["--yes-always"], []),
        ("ledger", "/tmp/elsewhere.db", None),
        ("user", "someone@else", None),
        ("line", "other-line", None),
        ("report_json", "/home/me/.bashrc", None),
        ("map_over_cap", "clamp", "refuse"),
        ("poll", True, False),
        ("model", "claude-opus-4-7", None),
        ("title", False, True),
    ],
)
def test_keys_that_are_not_limits_may_only_repeat_the_value_in_force(key, offered, current):
    assert not tighten.stricter_or_same(key, offered, current)
    assert tighten.stricter_or_same(key, current, current)


def team(text_tables: dict) -> TeamConfig:
    return parse_layers([("team.toml", text_tables)])


def test_team_monthly_caps_may_only_go_lower():
    current = team(
        {"monthly_usd": 200, "users": {"a@x": {"monthly_usd": 500}}, "lines": {"infra": {"monthly_usd": 100}}}
    )
    table = {
        "monthly_usd": 100,
        "monthly_warn_at": 0.5,
        "users": {"a@x": {"monthly_usd": 50}, "b@x": {"monthly_usd": 150}},
        "lines": {"infra": {"monthly_usd": 90}, "new": {"monthly_usd": 10}},
    }
    kept, ignored = tighten.tighter_team(table, team(table), current)
    assert kept == table and ignored == []


def test_team_monthly_caps_may_not_be_raised_switched_off_or_moved():
    current = team(
        {
            "monthly_usd": 200,
            "timezone": "UTC",
            "users": {"a@x": {"monthly_usd": 500}},
            "lines": {"infra": {"monthly_usd": 100}},
        }
    )
    table = {
        "monthly_usd": "off",
        "monthly_warn_at": 0.95,
        "timezone": "Pacific/Kiritimati",
        "users": {"a@x": {"monthly_usd": 600}, "b@x": {"monthly_usd": 300}},  # b falls back to 200 today
        "lines": {"infra": {"monthly_usd": "off"}},
    }
    kept, ignored = tighten.tighter_team(table, team(table), current)
    assert kept == {}
    assert ignored == [
        "team.monthly_usd",
        "team.monthly_warn_at",
        "team.timezone",
        'team.users."a@x"',
        'team.users."b@x"',
        'team.lines."infra"',
    ]
