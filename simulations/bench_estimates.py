"""How good the estimated start is: the estimate the loop makes for each job in the cycle it arrives in, against when
the job really started, next to the naive estimate "now".

    .venv/bin/python -m spillover.simulations.bench_estimates [--workload gavel-synth-dev.csv] [--nodes 8]
        [--limit 1000] [--errors 0,0.5] [--workers 2] [--out simulations/results/estimates]

Every replay drives the real loop with Spillover's solver at the reference setting. The estimate of a job is the
first plan's `start_h` for it: zero for a job started on-prem at once, the pool's boot time for a burst, the
forecast on-prem start for a job told to wait; it is what `jobs`, `describe` and the API show it from its first
cycle. Its error is real start minus estimate (positive: it started later than said). Runtime estimates are exact,
or carry an error drawn uniformly from [1 - e, 1 + e] per job (`--errors`), which the forecast then inherits.
Writes results.json and summary.md under OUT.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from rich.console import Console
from rich.table import Table

from spillover.placement import Action
from spillover.scheduler.clock import SimClock
from spillover.scheduler.context import CycleReport
from spillover.scheduler.store import Store
from spillover.scheduler.wiring import build_providers
from spillover.simulations.bench_policies import SCENARIOS, WORKLOADS, scenario_config
from spillover.simulations.runner import run_simulation
from spillover.simulations.simulate import _horizon_s, with_queues
from spillover.simulations.workloads import load_workload, to_arrivals

ROOT = Path(__file__).resolve().parents[1]
VALUE_OF_TIME = 4.0  # the reference policy's dollars per GPU-hour of waiting
HOUR = 3600.0
CLOSE_S = 900.0  # "within 15 minutes"


def replay_once(args: tuple[str, int, int | None, float | None]) -> dict:
    """One replay; per job: submitted, first estimate and its kind of place, real start and place, first action."""
    workload, nodes, limit, error = args
    scenario = next(s for s in SCENARIOS.values() if s.workload == workload and s.onprem_nodes == nodes)
    base = scenario_config(scenario)
    jobs, _ = load_workload(WORKLOADS / workload)
    replay = to_arrivals(jobs[:limit] if limit else jobs, estimate_error=error or None, seed=0)
    cfg = with_queues(base, {a.spec.queue for a in replay.arrivals}, value_of_time_per_gpu_hour=VALUE_OF_TIME)
    first: dict[str, tuple[float | None, str, str]] = {}

    def on_cycle(report: CycleReport) -> None:
        if report.plan is None or report.problem is None:
            return
        kinds = {t.id: t.kind for t in report.problem.targets}
        for d in report.plan.decisions:
            if d.job_id in first:
                continue
            at = report.at + d.start_h * HOUR if math.isfinite(d.start_h) else None
            place = kinds.get((d.target if d.action != Action.WAIT else d.wait_target) or "", "")
            first[d.job_id] = (at, place, d.action.value)

    store, clock = Store(cfg.store.url), SimClock()
    t0 = time.perf_counter()
    run_simulation(cfg, replay.arrivals, store, clock=clock, on_cycle=on_cycle,
                   providers=build_providers(cfg, clock, runtime=replay.runtime(cfg.speed)),
                   resolve_every_s=math.inf if not error else None, max_sim_s=_horizon_s(replay))
    kind = {c.name: c.kind for c in cfg.clusters}
    rows = []
    for j in store.jobs():
        est, place, action = first.get(j.id, (None, "", ""))
        rows.append({"id": j.id, "submitted_at": j.submitted_at, "started_at": j.started_at, "estimate_at": est,
                     "estimate_place": place, "ran_on": getattr(kind.get(j.cluster or ""), "value",
                                                                kind.get(j.cluster or "", "")),
                     "first_action": action})
    store.close()
    return {"workload": workload, "nodes": nodes, "limit": limit, "estimate_error": error or 0.0,
            "wall_s": round(time.perf_counter() - t0, 1), "jobs": rows}


def errors_of(rows: list[dict], naive: bool) -> list[float]:
    """Real start minus estimate, in seconds, of the started jobs that have one."""
    out = []
    for r in rows:
        if r["started_at"] is None:
            continue
        est = r["submitted_at"] if naive else r["estimate_at"]
        if est is not None:
            out.append(r["started_at"] - est)
    return out


def stats(errors: list[float]) -> dict:
    """Absolute error: median, p90, mean (hours); signed median (bias, hours); share within 15 minutes."""
    if not errors:
        return {"n": 0}
    absolute = sorted(abs(e) for e in errors)
    return {"n": len(errors), "median_h": round(statistics.median(absolute) / HOUR, 3),
            "p90_h": round(_quantile(absolute, 0.9) / HOUR, 3),
            "mean_h": round(statistics.fmean(absolute) / HOUR, 3),
            "bias_h": round(statistics.median(errors) / HOUR, 3),
            "within_15min": round(sum(a <= CLOSE_S for a in absolute) / len(absolute), 4)}


def _quantile(sorted_values: list[float], q: float) -> float:
    """The nearest-rank quantile: the smallest value with at least q of the values at or below it."""
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


def summarize(run: dict) -> dict:
    rows = run["jobs"]
    groups = {"all": rows, "waiting": [r for r in rows if r["first_action"] == Action.WAIT.value],
              "placed at once": [r for r in rows if r["first_action"] in (Action.START.value, Action.BURST.value)]}
    out = {k: v for k, v in run.items() if k != "jobs"}
    out["groups"] = {name: {"jobs": len(g), "spillover": stats(errors_of(g, naive=False)),
                            "now": stats(errors_of(g, naive=True)),
                            "no_estimate": sum(r["started_at"] is not None and r["estimate_at"] is None for r in g)}
                     for name, g in groups.items()}
    placed = [r for r in rows if r["started_at"] is not None and r["estimate_place"]]
    out["place_right"] = round(sum(r["estimate_place"] == r["ran_on"] for r in placed) / len(placed), 4) if placed else None
    return out


def table(results: list[dict]) -> Table:
    t = Table(title="Estimated start against the real start (absolute error, hours)")
    for col in ("runtime estimates", "jobs", "estimate", "median", "p90", "mean", "bias", "within 15 min"):
        t.add_column(col, justify="left" if col in ("runtime estimates", "jobs", "estimate") else "right")
    for r in results:
        label = "exact" if not r["estimate_error"] else f"+-{r['estimate_error']:.0%}"
        for group, g in r["groups"].items():
            for name, key in (("Spillover", "spillover"), ('"now"', "now")):
                s = g[key]
                if not s["n"]:
                    continue
                t.add_row(label, f"{group} ({g['jobs']:,})", name, f"{s['median_h']:.2f}", f"{s['p90_h']:.2f}",
                          f"{s['mean_h']:.2f}", f"{s['bias_h']:+.2f}", f"{s['within_15min']:.0%}")
    return t


def summary_md(results: list[dict]) -> str:
    r0 = results[0]
    lines = [f"# Estimated start against the real start on {r0['workload']}", "",
             f"First {r0['limit'] or 'all'} jobs, {r0['nodes'] * 8} on-prem GPUs, Spillover's solver at "
             f"${VALUE_OF_TIME:g} per GPU-hour of waiting. The estimate is the one made in the cycle a job arrives "
             "in; error = real start - estimate; \"now\" is the naive estimate (the submit time). Hours.", "",
             "| runtime estimates | jobs | estimate | median abs | p90 abs | mean abs | median signed | within 15 min |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in results:
        label = "exact" if not r["estimate_error"] else f"+-{r['estimate_error']:.0%}"
        for group, g in r["groups"].items():
            for name, key in (("Spillover", "spillover"), ('"now"', "now")):
                s = g[key]
                if s["n"]:
                    lines.append(f"| {label} | {group} ({g['jobs']:,}) | {name} | {s['median_h']:.2f} | "
                                 f"{s['p90_h']:.2f} | {s['mean_h']:.2f} | {s['bias_h']:+.2f} | "
                                 f"{s['within_15min']:.0%} |")
    lines.append("")
    for r in results:
        label = "exact" if not r["estimate_error"] else f"+-{r['estimate_error']:.0%}"
        lines.append(f"- {label}: estimated kind of place (on-prem or cloud) right for {r['place_right']:.1%} of "
                     f"the started jobs; {r['groups']['all']['no_estimate']} started jobs had no finite estimate; "
                     f"replay {r['wall_s']:.0f} s.")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench_estimates", description=__doc__.split("\n\n")[0])
    ap.add_argument("--workload", default="gavel-synth-dev.csv")
    ap.add_argument("--nodes", type=int, default=8, help="on-prem nodes of 8 GPUs (a scenario of bench_policies)")
    ap.add_argument("--limit", type=int, default=1000, help="replay the first N jobs (0: all)")
    ap.add_argument("--errors", default="0,0.5", help="runtime estimate errors to replay, comma-separated, in [0, 1)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "simulations" / "results" / "estimates")
    args = ap.parse_args(argv)
    if not any(s.workload == args.workload and s.onprem_nodes == args.nodes for s in SCENARIOS.values()):
        known = sorted({f"{s.workload} --nodes {s.onprem_nodes}" for s in SCENARIOS.values()})
        ap.error(f"--workload/--nodes: no reference scenario replays {args.workload} on {args.nodes} nodes; "
                 f"one of {', '.join(known)}")
    try:
        errors = [float(e) for e in args.errors.split(",") if e.strip()]
    except ValueError:
        ap.error(f"--errors: comma-separated numbers in [0, 1) (got {args.errors!r})")
    if not errors or any(not 0 <= e < 1 for e in errors):
        ap.error(f"--errors: comma-separated numbers in [0, 1) (got {args.errors!r})")
    limit = args.limit or None
    with ProcessPoolExecutor(max_workers=max(1, min(args.workers, len(errors)))) as pool:
        runs = list(pool.map(replay_once, [(args.workload, args.nodes, limit, e) for e in errors]))
    results = [summarize(r) for r in runs]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "summary.md").write_text(summary_md(results))
    Console(width=140).print(table(results))
    print(f"wrote {args.out / 'results.json'} and {args.out / 'summary.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
