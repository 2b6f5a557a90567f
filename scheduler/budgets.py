"""Dollar budgets of teams and queues: their lines (whole and per cloud), the period open at a time, what the ledger
shows spent in it, and where each stands against its budget."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Protocol

from spillover.scheduler.records import LedgerEntry
from spillover.scheduler.teams import Budget

ONPREM = "onprem"


@dataclass(frozen=True)
class BudgetLine:
    """One limit: a team's or queue's whole budget (cloud None) or its part on one cloud."""

    id: str  # "team:ml", "team:ml:aws", "queue:train", "queue:train:gcp"
    owner: str  # "team" or "queue"
    name: str
    cloud: str | None
    usd: float
    budget: Budget

    def counts(self, team: str, queue: str, cloud: str) -> bool:
        """Whether a ledger row of this team, queue and cloud is spend of this line."""
        if (team if self.owner == "team" else queue) != self.name:
            return False
        if self.cloud is not None:
            return cloud == self.cloud
        return cloud != ONPREM or self.budget.count_onprem


def budget_lines(config) -> list[BudgetLine]:
    """Every budget line the config defines, teams' first."""
    lines: list[BudgetLine] = []
    owners = [("team", t.name, t.budget) for t in config.teams] + [("queue", q.name, q.budget) for q in config.queues]
    for owner, name, budget in owners:
        if budget is None:
            continue
        lines.append(BudgetLine(f"{owner}:{name}", owner, name, None, budget.usd, budget))
        for cloud, usd in sorted(budget.clouds.items(), key=lambda kv: kv[0].value):
            lines.append(BudgetLine(f"{owner}:{name}:{cloud.value}", owner, name, cloud.value, usd, budget))
    return lines


def lines_of(lines: Iterable[BudgetLine], team: str, queue: str) -> tuple[str, ...]:
    """Ids of the lines a job of this team and queue spends against."""
    return tuple(b.id for b in lines if b.name == (team if b.owner == "team" else queue))


def period_name(period: str, start: float, end: float) -> str:
    """A budget period as people write it: 2026-01, 2026-01-05, or 2026-01-05 to 2026-01-12."""
    first = datetime.fromtimestamp(start, timezone.utc)
    if period == "month":
        return first.strftime("%Y-%m")
    if period == "day":
        return first.strftime("%Y-%m-%d")
    return f"{first:%Y-%m-%d} to {datetime.fromtimestamp(end, timezone.utc):%Y-%m-%d}"


class LedgerGroups(Protocol):
    def ledger_groups(self, since: float, until: float) -> list[tuple[str, str, str, float]]: ...


@dataclass
class BudgetStatus:
    """A line in its current period."""

    line: BudgetLine
    start: float
    end: float
    spent: float  # ledger dollars in [start, now)
    committed: float = 0.0  # what already runs would still cost, were it to finish as estimated

    @property
    def room(self) -> float:
        return max(0.0, self.line.usd - self.spent - self.committed)

    @property
    def share(self) -> float:
        return (self.spent / self.line.usd) if self.line.usd > 0 else (1.0 if self.spent > 0 else 0.0)

    def forecast(self, now: float) -> float:
        """Spend at the period's end at the rate of the period so far (and no less than what is committed)."""
        elapsed = max(0.0, min(now, self.end) - self.start)
        rate = self.spent / elapsed if elapsed > 0 else 0.0
        return max(self.spent + rate * max(0.0, self.end - now), self.spent + self.committed)

    @property
    def state(self) -> str:
        """ok, warning (past warn_at) or exhausted (nothing left)."""
        used = self.spent + self.committed
        if used >= self.line.usd - 1e-9:
            return "exhausted"
        return "warning" if used >= self.line.budget.warn_at * self.line.usd else "ok"


class BudgetBook:
    """Spend of every line in its open period, loaded from the store once per period and kept up to date from the
    ledger entries the loop writes (so the loop reads no ledger each cycle)."""

    def __init__(self, lines: list[BudgetLine]) -> None:
        self.lines = lines
        self.status: dict[str, BudgetStatus] = {}

    def open(self, store: LedgerGroups, now: float) -> None:
        """Make sure every line's period holding `now` is loaded; a line outside its fixed window has none."""
        need: dict[tuple[float, float], list[BudgetLine]] = {}
        for line in self.lines:
            period = line.budget.period_of(now)
            cur = self.status.get(line.id)
            if period is None:
                self.status.pop(line.id, None)
            elif cur is None or (cur.start, cur.end) != period:
                need.setdefault(period, []).append(line)
        for (start, end), lines in need.items():
            groups = store.ledger_groups(start, end)
            for line in lines:
                spent = sum(usd for team, queue, cloud, usd in groups if line.counts(team, queue, cloud))
                self.status[line.id] = BudgetStatus(line, start, end, spent)

    def add(self, entries: Iterable[LedgerEntry]) -> None:
        """Count new ledger entries into the lines whose open period holds their bucket."""
        if not self.status:
            return
        for e in entries:
            if not e.usd:
                continue
            for s in self.status.values():
                if s.start <= e.bucket < s.end and s.line.counts(e.team, e.queue, e.cloud):
                    s.spent += e.usd


def statuses(lines: list[BudgetLine], store: LedgerGroups, now: float) -> list[BudgetStatus]:
    """Each line in its period holding `now` (lines outside their window left out)."""
    book = BudgetBook(lines)
    book.open(store, now)
    return [book.status[b.id] for b in lines if b.id in book.status]
