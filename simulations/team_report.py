"""Per team, what a replay did: jobs, JCT and wait, cloud spend, on-prem GPU-hours and preemptions, and each budget
line's spend in its worst period against its limit — so a proposed quota or budget is tried on history first."""

from __future__ import annotations

import statistics
from datetime import timezone

from rich.table import Table

from spillover.scheduler.budgets import ONPREM, BudgetLine, budget_lines, period_name
from spillover.scheduler.config import SpilloverConfig
from spillover.scheduler.model import JobState
from spillover.scheduler.store import Store

HOUR = 3600.0


def team_rows(store: Store, config: SpilloverConfig, start: float, end: float) -> list[dict]:
    """One row per team of the config (queues with no team of their own are their own team)."""
    jobs = store.jobs()
    team_of = {j.id: j.team for j in jobs}
    rows: dict[str, dict] = {}

    def row(team: str) -> dict:
        return rows.setdefault(team, {"team": team, "jobs": 0, "finished": 0, "jct_avg_h": 0.0, "wait_avg_h": 0.0,
                                      "cloud_usd": 0.0, "onprem_gpu_h": 0.0, "preempted": 0})

    for t in config.teams:
        row(t.name)
    jct: dict[str, list[float]] = {}
    wait: dict[str, list[float]] = {}
    for j in jobs:
        row(j.team)["jobs"] += 1
        if j.state == JobState.SUCCEEDED and j.finished_at is not None:
            jct.setdefault(j.team, []).append((j.finished_at - j.submitted_at) / HOUR)
        if j.started_at is not None:
            wait.setdefault(j.team, []).append((j.started_at - j.submitted_at) / HOUR)
    for team, values in jct.items():
        rows[team]["finished"], rows[team]["jct_avg_h"] = len(values), round(statistics.fmean(values), 3)
    for team, values in wait.items():
        rows[team]["wait_avg_h"] = round(statistics.fmean(values), 3)
    for team, _queue, cloud, usd in store.ledger_groups(start, end + HOUR):
        if team and cloud != ONPREM:
            row(team)["cloud_usd"] = round(row(team)["cloud_usd"] + usd, 2)
    for team, _bucket, gpu_h in store.ledger_usage(start, end + HOUR, ONPREM):
        if team:
            row(team)["onprem_gpu_h"] = round(row(team)["onprem_gpu_h"] + gpu_h, 2)
    for e in store.events_of(("preempted",), start):
        if e.job_id in team_of:
            row(team_of[e.job_id])["preempted"] += 1
    return sorted(rows.values(), key=lambda r: r["team"])


def budget_rows(store: Store, config: SpilloverConfig, start: float, end: float) -> list[dict]:
    """One row per budget line: its limit, its spend in its worst period of the replay, and whether it held."""
    out = []
    for line in budget_lines(config):
        worst, worst_usd, periods = "", 0.0, 0
        for lo, hi in periods_of(line, start, end):
            periods += 1
            usd = sum(u for team, queue, cloud, u in store.ledger_groups(lo, hi) if line.counts(team, queue, cloud))
            if usd >= worst_usd:
                worst, worst_usd = period_name(line.budget.period, lo, hi), usd
        out.append({"budget": line.id, "period": line.budget.period, "usd": line.usd, "periods": periods,
                    "worst_period": worst, "worst_usd": round(worst_usd, 2),
                    "worst_share": round(worst_usd / line.usd, 4) if line.usd else None,
                    "held": worst_usd <= line.usd + 0.01})
    return out


def periods_of(line: BudgetLine, start: float, end: float) -> list[tuple[float, float]]:
    """The line's periods that overlap [start, end]."""
    out: list[tuple[float, float]] = []
    if line.budget.period == "window":
        opens = line.budget.start
        if opens is None:
            return []
        window = line.budget.period_of((opens if opens.tzinfo else opens.replace(tzinfo=timezone.utc)).timestamp())
        return [window] if window is not None and window[0] <= end and window[1] > start else []
    t = start
    while t <= end:
        p = line.budget.period_of(t)
        if p is None:
            break
        out.append(p)
        t = p[1]
    return out


def team_table(m) -> Table:
    """Per team under one replayed policy: jobs, JCT, cloud spend, on-prem use, preemptions and the worst period of
    each of its budgets."""
    label = f"{m.policy}" + (f" {m.setting}" if m.setting else "")
    t = Table(title=f"teams under {label}", title_justify="left")
    for col in ("team", "jobs", "JCT avg h", "wait avg h", "cloud $", "on-prem GPU-h", "preempted", "budget",
                "worst period"):
        t.add_column(col, justify="left" if col in ("team", "budget", "worst period") else "right")
    by_team: dict[str, list[dict]] = {}
    for b in m.budgets:
        by_team.setdefault(b["budget"].split(":")[1] if b["budget"].startswith("team:") else "", []).append(b)
    for r in m.teams:
        budgets = by_team.get(r["team"], [])
        t.add_row(r["team"], f"{r['jobs']:,}", f"{r['jct_avg_h']:.2f}", f"{r['wait_avg_h']:.2f}",
                  f"{r['cloud_usd']:,.0f}", f"{r['onprem_gpu_h']:,.0f}", str(r["preempted"]),
                  "\n".join(f"{b['budget']} ${b['usd']:,.0f}/{b['period']}" for b in budgets),
                  "\n".join(f"{b['worst_period']} {b['worst_share']:.0%}" + ("" if b["held"] else " OVER")
                            if b["worst_share"] is not None else b["worst_period"] for b in budgets))
    return t
