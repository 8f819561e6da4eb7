"""A team's monthly caps hold for capguard's Budget as for a CLI run: the real anthropic SDK against the fake
Anthropic server on 127.0.0.1, a team config with a monthly cap, on SQLite and PostgreSQL.

Refused at the start, the warning past the soft threshold, the month as a USD ceiling, stopped mid-task by other
writers (a second Budget, a CLI run's rows), `capguard ack`, and the month's reset with an injected clock.
"""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

anthropic = pytest.importorskip("anthropic")

from capguard import Budget, BudgetExceeded  # noqa: E402
from capguard.budget.allowance import MonthGuard, utc_text  # noqa: E402
from capguard.config.settings import load_settings  # noqa: E402
from capguard.core.monthly import month_of, warnings  # noqa: E402
from capguard.ledger import open_ledger  # noqa: E402
from tests.fakes.fake_anthropic import FakeAnthropic, Script  # noqa: E402
from tests.integration.test_budget_sdk import OPUS, PROMPT, USAGE, loop, main_requests, sdk  # noqa: E402
from tests.integration.test_ledger import BACKENDS, PG_DSN, make_target, with_option  # noqa: E402,F401 (fixture)
from tests.integration.test_monthly import USER, ZONE, seed  # noqa: E402

backends = pytest.mark.parametrize("make_target", BACKENDS, indirect=True)
REFUSED_AT_START = f"not started: monthly cap reached: {USER} has spent $0.50 of the $0.50 monthly cap for "


class Team:
    """A team config (`user` = USER, a $0.50 monthly cap in Europe/Berlin) and its ledger, found by Budget and by
    the CLI through CAPGUARD_CONFIG."""

    def __init__(self, tmp_path, target: str, monkeypatch):
        self.tmp, self.target = tmp_path, target
        self.config = tmp_path / "team.toml"
        monkeypatch.setenv("CAPGUARD_CONFIG", str(self.config))
        self.configure()
        self.made: list[Budget] = []

    def configure(self, tables: str = "") -> None:
        self.config.write_text(
            f'ledger = "{self.target}"\nuser = "{USER}"\n[team]\ntimezone = "{ZONE}"\n'
            f'[team.users."{USER}"]\nmonthly_usd = 0.5\n{tables}'
        )

    def budget(self, **kwargs) -> Budget:
        kwargs.setdefault("cwd", self.tmp)
        self.made.append(Budget(**kwargs))
        return self.made[-1]

    def seed(self, usd: float, **kw) -> None:
        """Spend as a CLI run writes it: a run row of its own and a usage row."""
        seed(self.target, usd, **kw)

    def month_spend(self, now: datetime | None = None) -> float:
        month = month_of(now or datetime.now(timezone.utc), ZoneInfo(ZONE))
        with open_ledger(self.target) as ledger:
            cost, _ = ledger.spend(user=USER, since_utc=utc_text(month.start_utc), until_utc=utc_text(month.end_utc))
        return cost / 1e6

    def run_row(self, task_id: str) -> dict:
        with open_ledger(self.target) as ledger:
            return ledger.run(task_id)

    def ack(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "capguard", "ack", *args], cwd=self.tmp, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return done.stdout


@pytest.fixture
def team(tmp_path, make_target, monkeypatch):
    found = Team(tmp_path, make_target(), monkeypatch)
    yield found
    for budget in found.made:
        budget.close()


@pytest.fixture
def server():
    with FakeAnthropic(Script(usage=USAGE, honor_max_tokens=True)) as srv:  # $0.055 a reply from Opus
        yield srv


def call(client):
    return client.messages.create(model=OPUS, max_tokens=4_000, messages=PROMPT)


# --- at the start -----------------------------------------------------------------------------------------------


@backends
def test_a_spent_month_refuses_the_task_before_any_request(team, server):
    earlier = team.budget(usd=5)
    call(earlier.wrap(sdk(server)))
    earlier.close()
    team.seed(0.445)  # with the earlier task's $0.055: the month's $0.50
    before = len(server.requests)
    with pytest.raises(BudgetExceeded) as stop:
        team.budget(usd=5)
    assert stop.value.reason == "monthly" and stop.value.exit_code == 117
    assert REFUSED_AT_START in str(stop.value) and "; it resets " in str(stop.value)
    assert str(stop.value).endswith('To go on this month: capguard ack --reason "..."')  # the CLI's sentence
    (spent,) = stop.value.figures["month"]["budgets"]
    assert (spent["name"], spent["spent_usd"], spent["cap_usd"]) == (USER, 0.5, 0.5)
    assert stop.value.figures["month"]["resets"].endswith(ZONE)

    with pytest.raises(BudgetExceeded, match=re.escape(REFUSED_AT_START)) as again:  # a resumed task too
        Budget.resume(earlier.task_id, cwd=team.tmp)
    assert again.value.reason == "monthly"
    assert len(server.requests) == before  # nothing reached the API
    assert team.run_row(earlier.task_id)["stop_reason"] is None  # the refused resume left the task as it was


@backends
def test_the_warning_past_the_soft_threshold_is_the_clis_line_once(team, server):
    team.seed(0.40)
    with open_ledger(team.target) as ledger:
        settings = load_settings(None, cwd=team.tmp)
        [cli_line] = warnings(MonthGuard(ledger, settings.team, USER, None).standings())
    seen = []
    budget = team.budget(usd=5, on_warning=seen.append)
    assert [(w.cap, w.message) for w in seen] == [("monthly", cli_line)]
    assert cli_line.startswith(f"{USER} has spent $0.40 (80%) of the $0.50 monthly cap for ")
    assert (seen[0].used, seen[0].limit) == (0.40, 0.50)
    call(budget.wrap(sdk(server)))
    assert len(seen) == 1 and budget.report()["warnings"] == ["monthly"]


# --- while running ----------------------------------------------------------------------------------------------


@backends
def test_the_month_is_the_usd_ceiling_when_it_leaves_less_than_the_tasks_own_cap(team, server):
    team.seed(0.35)  # $0.15 left, the task's own cap is $5
    budget = team.budget(usd=5)
    stop = loop(budget.wrap(sdk(server)))
    assert stop.reason == "monthly" and stop.exit_code == 117
    assert "left of the monthly budget" in str(stop) and "To go on this month: capguard ack" in str(stop)
    assert budget.cost_usd <= 0.15 and team.month_spend() <= 0.50  # never crossed, in the ledger either
    sent = [r["body"]["max_tokens"] for r in main_requests(server)]
    assert len(sent) == budget.steps and min(sent) < 4_000  # max_tokens was lowered to fit the month
    report = budget.close()
    assert report["stop_reason"] == "monthly" and report["exit_code"] == 117 and report["overshoot"] <= 0
    assert report["caps"]["usd"] == 5 and report["caps"]["monthly_remaining_usd"] == pytest.approx(0.15)


@backends
def test_a_second_budget_spending_the_month_stops_the_first_before_its_next_call(team, server):
    first = team.budget(usd=5, count_tokens=False)  # no count_tokens request: a refusal sends nothing at all
    client = first.wrap(sdk(server))
    call(client)
    other = team.budget(usd=5)
    assert loop(other.wrap(sdk(server))).reason == "monthly"  # the other task spends what the month leaves
    seen = len(server.requests)
    with pytest.raises(BudgetExceeded) as stop:
        call(client)
    assert stop.value.reason == "monthly" and len(server.requests) == seen
    assert first.stop_reason == "monthly"
    report = first.close()
    assert (report["stop_reason"], report["exit_code"], report["steps"]) == ("monthly", 117, 1)
    row = team.run_row(first.task_id)
    assert (row["stop_reason"], row["exit_code"], row["user"]) == ("monthly", 117, USER)
    assert team.month_spend() <= 0.50


@backends
def test_a_cli_run_spending_the_month_stops_the_task_and_an_ack_lets_it_go_on(team, server):
    budget = team.budget(usd=5)
    client = budget.wrap(sdk(server))
    call(client)
    team.seed(0.45)  # another run's rows, as the CLI writes them: the month is spent
    seen = len(server.requests)
    with pytest.raises(BudgetExceeded) as stop:
        call(client)
    assert stop.value.reason == "monthly" and len(server.requests) == seen  # not even a count_tokens
    assert str(stop.value).startswith(
        "cost $0.06 reached the $0.05 left of the monthly budget"  # the CLI's words
        f" ({USER}: other runs have spent $0.45 of the $0.50 monthly cap for "
    )
    assert budget.report()["stop_reason"] == "monthly"

    out = team.ack("--reason", "release tonight")  # $0.505 spent: the limit is $0.63, a quarter of the cap more
    assert "$0.50 spent of the $0.50 monthly cap; new runs may spend $0.12 more (limit $0.63)" in out
    call(client)  # the ack raised the limit for the running task too
    assert budget.report()["stop_reason"] is None
    again = loop(client)  # until the ack's allowance is spent
    assert again.reason == "monthly" and budget.steps == 3 and team.month_spend() <= 0.63
    assert budget.close()["stop_reason"] == "monthly"
    assert team.run_row(budget.task_id)["stop_reason"] == "monthly"


@backends
def test_a_budget_line_is_charged_and_held_like_a_cli_runs(team, server):
    team.configure(tables="[team.lines.infra]\nmonthly_usd = 0.2\n")
    team.seed(0.19, user="other@example.com", line="infra")
    budget = team.budget(usd=5, line="infra")
    stop = loop(budget.wrap(sdk(server)))
    assert stop.reason == "monthly" and "budget line infra: other runs have spent $0.19" in str(stop)
    assert team.run_row(budget.task_id)["line"] == "infra"
    assert team.budget(usd=5).steps == 0  # off the line only the developer's own $0.50 applies
    with pytest.raises(ValueError, match="charged to line 'infra'"):
        Budget.resume(budget.task_id, line="other", cwd=team.tmp)


# --- the month's reset ------------------------------------------------------------------------------------------


@backends
def test_the_month_resets_exactly_at_local_midnight_on_the_first(team, server):
    reset = datetime(2031, 3, 31, 22, 0, tzinfo=timezone.utc)  # 2031-04-01 00:00 in Berlin (summer time)
    now = [reset - timedelta(minutes=30)]
    team.seed(0.40, at=now[0])
    budget = team.budget(usd=5, utc_clock=lambda: now[0])
    client = budget.wrap(sdk(server))
    call(client)  # $0.455 in March
    team.seed(0.05, at=now[0])  # $0.505: March is spent
    with pytest.raises(BudgetExceeded, match="left of the monthly budget"):
        call(client)
    now[0] = reset - timedelta(microseconds=1)
    with pytest.raises(BudgetExceeded, match=r"for 2031-03\); it resets 2031-04-01 00:00 Europe/Berlin"):
        call(client)
    with pytest.raises(BudgetExceeded, match=re.escape(REFUSED_AT_START)):
        team.budget(usd=5, utc_clock=lambda: now[0])

    now[0] = reset
    call(client)  # April: the task goes on, its March spend left in March
    assert team.month_spend(now[0]) == pytest.approx(0.055) and team.month_spend(reset - timedelta(hours=1)) > 0.5
    fresh = team.budget(usd=5, utc_clock=lambda: now[0])  # and a new task starts
    call(fresh.wrap(sdk(server)))
    assert budget.close()["stop_reason"] is None
