"""The price of dollar budgets: philly-vc (15 teams, 200 on-prem GPUs) replayed with no limits, with a monthly cloud
budget per team of half its unconstrained spend, and with static per-team cloud GPU caps tuned to the same total spend.

    .venv/bin/python -m spillover.simulations.bench_budgets [--limit N] [--fraction 0.5] [--workers 2]
        [--out simulations/results/budgets]

Every replay drives the real loop (Spillover's solver, the reference setting with 25 on-prem nodes of 8 GPUs) and
lists every queue of the trace as a team of weight 1, so fair share orders the on-prem queue the same way in all
three. Budgets count cloud spend only (`count_onprem: false`: the reference on-prem cluster has no GPU-hour cost).
The caps baseline gives each team `round(alpha x` its mean unconstrained cloud GPUs in use`)`, with alpha searched
until the total cloud spend is within 3% of the budgeted run's. Writes results.json and summary.md under OUT.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from rich.console import Console
from rich.table import Table

from spillover.scheduler.clock import SimClock
from spillover.scheduler.config import parse_config
from spillover.scheduler.model import JobState
from spillover.scheduler.store import Store
from spillover.scheduler.wiring import build_providers
from spillover.simulations.bench_policies import SCENARIOS, WORKLOADS, scenario_config
from spillover.simulations.runner import run_simulation
from spillover.simulations.simulate import _horizon_s, with_queues
from spillover.simulations.workloads import load_workload, to_arrivals

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = SCENARIOS["philly-full"]  # philly-vc.csv on 25 nodes x 8 GPUs
VALUE_OF_TIME = 4.0  # the reference policy's dollars per GPU-hour of waiting
SPEND_TOLERANCE = 0.03  # the caps baseline's total spend within 3% of the budgeted run's
HOUR = 3600.0


@dataclass
class TeamResult:
    jobs: int = 0
    jct_avg_h: float = 0.0
    cloud_usd: float = 0.0
    cloud_gpu_h: float = 0.0
    monthly_usd: dict[str, float] = field(default_factory=dict)  # "YYYY-MM" -> cloud dollars


@dataclass
class RunResult:
    name: str
    teams: dict[str, TeamResult]
    wall_s: float
    span_h: float  # first submission to last finish

    @property
    def cloud_usd(self) -> float:
        return sum(t.cloud_usd for t in self.teams.values())

    @property
    def jct_avg_h(self) -> float:
        n = sum(t.jobs for t in self.teams.values())
        return sum(t.jct_avg_h * t.jobs for t in self.teams.values()) / n if n else 0.0


def months(start: float, end: float) -> list[tuple[str, float, float]]:
    """Calendar months (UTC) from `start` to `end`: (YYYY-MM, first second, first second of the next)."""
    out = []
    d = datetime.fromtimestamp(start, timezone.utc).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    while d.timestamp() < end:
        nxt = d.replace(year=d.year + (d.month == 12), month=d.month % 12 + 1)
        out.append((d.strftime("%Y-%m"), d.timestamp(), nxt.timestamp()))
        d = nxt
    return out


def replay_once(args: tuple[str, list[dict], int | None]) -> RunResult:
    """Replay the trace with `teams` (config `teams:` entries) and read per team its jobs' JCT and cloud spend."""
    name, teams, limit = args
    base = scenario_config(SCENARIO)
    jobs, _ = load_workload(WORKLOADS / SCENARIO.workload)
    replay = to_arrivals(jobs[:limit] if limit else jobs, seed=0)
    queues = {a.spec.queue for a in replay.arrivals}
    cfg = with_queues(base, queues, value_of_time_per_gpu_hour=VALUE_OF_TIME)
    data = cfg.model_dump(mode="json", by_alias=True, exclude_none=True)
    data["teams"] = teams
    cfg = parse_config(data, source=name, catalog=cfg.catalog)
    t0 = time.perf_counter()
    store, clock = Store(cfg.store.url), SimClock()
    run = run_simulation(cfg, replay.arrivals, store, clock=clock,
                         providers=build_providers(cfg, clock, runtime=replay.runtime(cfg.speed)),
                         resolve_every_s=math.inf, max_sim_s=_horizon_s(replay))
    out = result_of(name, store, run.started_at, run.ended_at)
    out.wall_s = time.perf_counter() - t0
    store.close()
    return out


def result_of(name: str, store: Store, start: float, end: float) -> RunResult:
    teams: dict[str, TeamResult] = {}
    jct: dict[str, list[float]] = {}
    for j in store.jobs(states=[JobState.SUCCEEDED]):
        jct.setdefault(j.team, []).append((j.finished_at - j.submitted_at) / HOUR)
    for team, values in jct.items():
        teams[team] = TeamResult(jobs=len(values), jct_avg_h=statistics.fmean(values))
    for month, lo, hi in months(start, end):
        for team, _queue, cloud, usd in store.ledger_groups(lo, hi):
            if cloud == "onprem" or not team:
                continue
            t = teams.setdefault(team, TeamResult())
            t.monthly_usd[month] = t.monthly_usd.get(month, 0.0) + usd
            t.cloud_usd += usd
    for team, _bucket, gpu_h in store.ledger_usage(start, end + HOUR, "aws"):
        if team in teams:
            teams[team].cloud_gpu_h += gpu_h
    return RunResult(name, teams, 0.0, (end - start) / HOUR)


def budget_teams(free: RunResult, fraction: float) -> tuple[list[dict], dict[str, float]]:
    """A monthly cloud budget per team: `fraction` of its unconstrained spend per month of the replay."""
    n_months = max(1, len({m for t in free.teams.values() for m in t.monthly_usd}))
    usd = {team: round(fraction * t.cloud_usd / n_months, 2) for team, t in sorted(free.teams.items())}
    return [{"name": team, "budget": {"usd": b, "period": "month", "count_onprem": False}}
            for team, b in usd.items()], usd


def cap_teams(free: RunResult, alpha: float) -> tuple[list[dict], dict[str, int]]:
    """A static cloud GPU cap per team: `alpha` x its mean unconstrained cloud GPUs in use."""
    caps = {team: max(0, round(alpha * t.cloud_gpu_h / free.span_h)) for team, t in sorted(free.teams.items())}
    return [{"name": team, "max_cloud_gpus": c} for team, c in caps.items()], caps


def plain_teams(free_queues: Sequence[str]) -> list[dict]:
    return [{"name": q} for q in sorted(free_queues)]


def search_caps(free: RunResult, target_usd: float, run: Callable[[list[tuple]], list[RunResult]],
                limit: int | None, workers: int, rounds: int = 8) -> tuple[RunResult, float, dict[str, int], list]:
    """Static caps whose total cloud spend matches `target_usd`: alpha bracketed and narrowed `workers` at a time."""
    tried: list[tuple[float, RunResult, dict[str, int]]] = []
    lo, hi = 0.0, 3.0
    for _ in range(rounds):
        alphas = [lo + (hi - lo) * (k + 1) / (workers + 1) for k in range(workers)]
        specs = [cap_teams(free, a) for a in alphas]
        results = run([(f"caps alpha={a:.3f}", teams, limit) for a, (teams, _) in zip(alphas, specs)])
        for a, (_, caps), r in zip(alphas, specs, results):
            tried.append((a, r, caps))
        best = min(tried, key=lambda x: abs(x[1].cloud_usd - target_usd))
        if abs(best[1].cloud_usd - target_usd) <= SPEND_TOLERANCE * target_usd:
            break
        below = [a for a, r, _ in tried if r.cloud_usd < target_usd]
        above = [a for a, r, _ in tried if r.cloud_usd >= target_usd]
        lo = max(below, default=lo)
        hi = min(above, default=hi * 2)
    a, r, caps = min(tried, key=lambda x: abs(x[1].cloud_usd - target_usd))
    return r, a, caps, [(x, y.cloud_usd) for x, y, _ in tried]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench_budgets", description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, default=None, help="replay only the first N jobs of the trace")
    ap.add_argument("--fraction", type=float, default=0.5, help="monthly budget as a fraction of unconstrained spend")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "simulations" / "results" / "budgets")
    args = ap.parse_args(argv)
    console = Console(width=160)
    jobs, _ = load_workload(WORKLOADS / SCENARIO.workload)
    queues = sorted({j.queue for j in (jobs[:args.limit] if args.limit else jobs)})
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        def run(batch: list[tuple]) -> list[RunResult]:
            return list(pool.map(replay_once, batch))

        (free,) = run([("unconstrained", plain_teams(queues), args.limit)])
        console.print(f"unconstrained: ${free.cloud_usd:,.0f} cloud, JCT {free.jct_avg_h:.2f} h ({free.wall_s:.0f} s)")
        teams, budgets = budget_teams(free, args.fraction)
        (budgeted,) = run([("budgets", teams, args.limit)])
        console.print(f"budgets: ${budgeted.cloud_usd:,.0f} cloud, JCT {budgeted.jct_avg_h:.2f} h")
        # the caps search takes longest: what the budgets showed is written first, should it not finish
        write(build_report(free, budgeted, RunResult("caps", {}, 0.0, 0.0), budgets, {}, math.nan, [], args,
                           time.perf_counter() - t0, caps_done=False), args.out)
        capped, alpha, caps, tried = search_caps(free, budgeted.cloud_usd, run, args.limit, args.workers)
        console.print(f"caps (alpha {alpha:.3f}): ${capped.cloud_usd:,.0f} cloud, JCT {capped.jct_avg_h:.2f} h")
    report = build_report(free, budgeted, capped, budgets, caps, alpha, tried, args, time.perf_counter() - t0)
    write(report, args.out)
    console.print(table(report))
    console.print(f"wrote {args.out / 'results.json'} and {args.out / 'summary.md'}")
    return 0 if report["budgets_held"] else 1


def write(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "summary.md").write_text(summary_md(report))


def build_report(free: RunResult, budgeted: RunResult, capped: RunResult, budgets: dict[str, float],
                 caps: dict[str, int], alpha: float, tried: list, args: argparse.Namespace, wall_s: float,
                 caps_done: bool = True) -> dict:
    rows = []
    for team in sorted(free.teams):
        f, b, c = free.teams[team], budgeted.teams.get(team, TeamResult()), capped.teams.get(team, TeamResult())
        worst = max(b.monthly_usd.values(), default=0.0)
        rows.append({
            "team": team, "jobs": f.jobs, "budget_usd_per_month": budgets.get(team, 0.0), "cap_gpus": caps.get(team, 0),
            "free_usd": round(f.cloud_usd, 2), "budgets_usd": round(b.cloud_usd, 2), "caps_usd": round(c.cloud_usd, 2),
            "budgets_worst_month_usd": round(worst, 2),
            "budgets_worst_month_share": round(worst / budgets[team], 4) if budgets.get(team) else None,
            "held": worst <= budgets.get(team, 0.0) + 0.01,
            "free_jct_h": round(f.jct_avg_h, 3), "budgets_jct_h": round(b.jct_avg_h, 3), "caps_jct_h": round(c.jct_avg_h, 3),
            "budgets_jct_cost_h": round(b.jct_avg_h - f.jct_avg_h, 3),
            "caps_jct_cost_h": round(c.jct_avg_h - f.jct_avg_h, 3),
        })
    return {
        "workload": SCENARIO.workload, "jobs": sum(t.jobs for t in free.teams.values()), "limit": args.limit,
        "onprem_gpus": SCENARIO.onprem_nodes * 8, "value_of_time_per_gpu_hour": VALUE_OF_TIME,
        "fraction": args.fraction, "alpha": None if math.isnan(alpha) else alpha, "caps_search": tried,
        "caps_done": caps_done,
        "budgets_held": all(r["held"] for r in rows),
        "total": {"free_usd": round(free.cloud_usd, 2), "budgets_usd": round(budgeted.cloud_usd, 2),
                  "caps_usd": round(capped.cloud_usd, 2), "free_jct_h": round(free.jct_avg_h, 3),
                  "budgets_jct_h": round(budgeted.jct_avg_h, 3), "caps_jct_h": round(capped.jct_avg_h, 3)},
        "teams": rows, "wall_s": round(wall_s, 1),
    }


def table(report: dict) -> Table:
    t = Table(title=f"{report['workload']}: monthly budgets of {report['fraction']:.0%} of unconstrained spend "
                    f"against static cloud GPU caps (alpha {report['alpha']:.3f}) at the same total spend")
    for col in ("team", "jobs", "budget $/mo", "worst month", "cap GPUs", "spend free", "spend budgets",
                "spend caps", "JCT free h", "JCT budgets h", "JCT caps h"):
        t.add_column(col, justify="left" if col == "team" else "right")
    for r in report["teams"] + [dict(report["total"], team="all", jobs=report["jobs"])]:
        share = r.get("budgets_worst_month_share")
        t.add_row(r["team"], f"{r['jobs']:,}", f"{r['budget_usd_per_month']:,.0f}" if "budget_usd_per_month" in r else "",
                  "" if share is None else f"{share:.0%}", str(r.get("cap_gpus", "")),
                  f"{r['free_usd']:,.0f}", f"{r['budgets_usd']:,.0f}", f"{r['caps_usd']:,.0f}",
                  f"{r['free_jct_h']:.2f}", f"{r['budgets_jct_h']:.2f}", f"{r['caps_jct_h']:.2f}")
    return t


def summary_md(report: dict) -> str:
    tot = report["total"]
    lines = [
        f"# Budgets against static caps on {report['workload']}", "",
        f"{report['jobs']:,} jobs, {report['onprem_gpus']} on-prem GPUs, Spillover's solver at "
        f"${report['value_of_time_per_gpu_hour']:g} per GPU-hour of waiting. Monthly cloud budget per team: "
        f"{report['fraction']:.0%} of its unconstrained spend per month. Caps: "
        + (f"alpha {report['alpha']:.3f}" if report["caps_done"] else "(search not finished: columns empty) alpha")
        + " x each team's mean unconstrained cloud GPUs. Every team held to its budget in every month: "
        f"{'yes' if report['budgets_held'] else 'NO'}.", "",
        "| team | jobs | budget $/month | worst month / budget | cap GPUs | spend: free | budgets | caps "
        "| JCT h: free | budgets | caps |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["teams"]:
        share = r["budgets_worst_month_share"]
        lines.append(f"| {r['team']} | {r['jobs']:,} | {r['budget_usd_per_month']:,.0f} | "
                     f"{'' if share is None else f'{share:.0%}'} | {r['cap_gpus']} | {r['free_usd']:,.0f} | "
                     f"{r['budgets_usd']:,.0f} | {r['caps_usd']:,.0f} | {r['free_jct_h']:.2f} | "
                     f"{r['budgets_jct_h']:.2f} | {r['caps_jct_h']:.2f} |")
    lines.append(f"| **all** | {report['jobs']:,} | | | | {tot['free_usd']:,.0f} | {tot['budgets_usd']:,.0f} | "
                 f"{tot['caps_usd']:,.0f} | {tot['free_jct_h']:.2f} | {tot['budgets_jct_h']:.2f} | "
                 f"{tot['caps_jct_h']:.2f} |")
    lines += ["", f"Wall time {report['wall_s']:,.0f} s. Command: `make bench-budgets`."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
