"""The placement quality benchmark: Spillover against the Starburst baselines on the shared workloads, in the
reference setting (one on-prem cluster, unlimited cloud at one price), with the targets checked.

    .venv/bin/python -m simulations.bench_policies [--scenario gavel,philly,gavel-estimates] [--limit N]
        [--workers 2] [--out simulations/results]

Each scenario writes results.json, results.csv, pareto.png and summary.md under OUT/<scenario>/.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path

from scheduler.config import SpilloverConfig, load_config, parse_config
from simulations.metrics import RunMetrics
from simulations.simulate import RunSpec, run_one, write_results
from simulations.workloads import load_workload, to_arrivals

ROOT = Path(__file__).resolve().parents[1]
WORKLOADS = ROOT.parent / "shared" / "data" / "workloads"
REFERENCE = ROOT / "config" / "simulate" / "reference.yaml"
JCT_SLACK = 1.05  # "at an average JCT no more than 5% above No-Wait"
TARGET_RATIO = 0.9  # "... at most 0.9 x the cloud GPU-hours of the best baseline at that JCT"


@dataclass(frozen=True)
class Scenario:
    name: str
    workload: str
    onprem_nodes: int  # of 8 GPUs
    estimate_error: float | None = None
    value_of_time: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 16.0, 64.0)
    value_of_job_time: tuple[float, ...] = (8.0, 16.0, 32.0, 64.0, 128.0, 512.0)
    wait_h: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
    k: tuple[float, ...] = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
    extra: tuple[str, ...] = field(default=("onprem-only",))
    # The committed results' settings: a replay takes about 50 ms of wall time per job, so the workloads' prefixes.
    limit: int | None = None
    points: int | None = None


SCENARIOS = {
    "gavel": Scenario("gavel", "gavel-synth-dev.csv", 8, limit=2000),
    "philly": Scenario("philly", "philly-vc.csv", 25, limit=1000, points=4),
    "gavel-estimates": Scenario("gavel-estimates", "gavel-synth-dev.csv", 8, estimate_error=0.5, limit=1000, points=4),
}


def scenario_config(s: Scenario) -> SpilloverConfig:
    base = load_config(REFERENCE)
    data = base.model_dump(mode="json", by_alias=True, exclude_none=True)
    data["clusters"][0]["node_groups"][0]["count"] = s.onprem_nodes
    return parse_config(data, source=str(REFERENCE), catalog=base.catalog)


def thinned(s: Scenario, n: int) -> Scenario:
    """The scenario with each sweep cut to `n` values spread over its range, both ends kept."""
    def pick(values: tuple[float, ...]) -> tuple[float, ...]:
        if len(values) <= n:
            return values
        return tuple(values[round(i * (len(values) - 1) / (n - 1))] for i in range(n)) if n > 1 else values[-1:]
    return replace(s, value_of_time=pick(s.value_of_time), value_of_job_time=pick(s.value_of_job_time),
                   wait_h=pick(s.wait_h), k=pick(s.k))


def runs_of(s: Scenario, queues: Sequence[str]) -> list[RunSpec]:
    out = [RunSpec("spillover", v) for v in s.value_of_time]
    out += [RunSpec("spillover-job", v) for v in s.value_of_job_time]
    for q in queues:
        out.append(RunSpec("no-wait", None, q))
        out += [RunSpec("constant-wait", v, q) for v in s.wait_h]
        out += [RunSpec("compute-wait", v, q) for v in s.k]
        out += [RunSpec(p, None, q) for p in s.extra]
    return out


def _one(args: tuple) -> RunMetrics:
    s, spec, limit = args
    config = scenario_config(s)
    jobs, _ = load_workload(WORKLOADS / s.workload)
    replay = to_arrivals(jobs[:limit] if limit else jobs, estimate_error=s.estimate_error, seed=0)
    return run_one(config, replay, spec, estimates_exact=s.estimate_error is None)


def frontier(points: list[RunMetrics]) -> list[tuple[float, float]]:
    """The Pareto frontier (JCT, cloud GPU-hours) of a set of runs, sorted by JCT."""
    pts = sorted((p.jct_avg_h, p.cloud_gpu_hours) for p in points)
    out: list[tuple[float, float]] = []
    for jct, cost in pts:
        if not out or cost < out[-1][1]:
            out.append((jct, cost))
    return out


def cost_at(front: list[tuple[float, float]], jct: float) -> float | None:
    """The least cloud GPU-hours the frontier reaches at an average JCT of at most `jct` (None: none that fast)."""
    ok = [c for j, c in front if j <= jct + 1e-9]
    return min(ok) if ok else None


def check(results: list[RunMetrics], s: Scenario, spillover: str) -> dict:
    """The targets for one of Spillover's curves: dominance, the 0.9x rule at No-Wait's JCT + 5%, and the share
    of the best baseline's gap to the lower bound that Spillover closes."""
    spill = [r for r in results if r.policy == spillover]
    base = [r for r in results if not r.policy.startswith("spillover") and r.policy != "onprem-only"]
    front = frontier(spill)
    dominated = []
    for b in base:
        c = cost_at(front, b.jct_avg_h)
        dominated.append(c is not None and c <= b.cloud_gpu_hours + 1e-6)
    no_wait = [r for r in base if r.policy == "no-wait"]
    limit = JCT_SLACK * min(r.jct_avg_h for r in no_wait) if no_wait else None
    best_base = cost_at(frontier(base), limit) if limit else None
    ours = cost_at(front, limit) if limit else None
    # strict: no plan that finishes as early as No-Wait's does can send less to the cloud
    lb = max((r.lower_bound_at_makespan for r in no_wait), default=0.0)
    lb_window = max(r.lower_bound_cloud_gpu_hours for r in results)
    closed = None
    if best_base is not None and ours is not None and best_base > lb:
        closed = (best_base - ours) / (best_base - lb)
    by_policy = {}
    for p in ("no-wait", "constant-wait", "compute-wait"):
        rs = [r for r in base if r.policy == p]
        if rs:
            by_policy[p] = sum(cost_at(front, r.jct_avg_h) is not None and cost_at(front, r.jct_avg_h) <= r.cloud_gpu_hours + 1e-6
                               for r in rs) / len(rs)
    return {
        "scenario": s.name, "spillover": spillover, "baseline_points_dominated": f"{sum(dominated)}/{len(dominated)}",
        "dominated_share_by_policy": by_policy,
        "jct_limit_h": limit, "best_baseline_cloud_gpu_h": best_base, "spillover_cloud_gpu_h": ours,
        "ratio": (ours / best_base) if ours is not None and best_base else None,
        "ratio_target_met": (ours is not None and best_base is not None and ours <= TARGET_RATIO * best_base),
        "lower_bound_cloud_gpu_h": lb, "lower_bound_arrival_window_cloud_gpu_h": lb_window, "gap_closed": closed,
        "wall_s_per_run": {r.policy + (" " + r.setting if r.setting else ""): round(r.wall_s, 1) for r in results},
    }


def summary_md(results: list[RunMetrics], verdicts: list[dict], s: Scenario, jobs: int) -> str:
    lines = [f"# {s.name}: {jobs:,} jobs of {s.workload}, {s.onprem_nodes * 8} on-prem GPUs"
             + (f", runtime estimates +-{s.estimate_error:.0%}" if s.estimate_error else ""), "",
             "| policy | queue | setting | cloud GPU-h | cloud $ | avg JCT h | p50 | p90 | p99 | avg wait h | p90 wait |"
             " on-prem util | wall s |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(results, key=lambda r: (r.policy, r.queue, r.jct_avg_h)):
        lines.append(f"| {r.policy} | {r.queue} | {r.setting} | {r.cloud_gpu_hours:,.0f} | {r.cloud_usd:,.0f} | "
                     f"{r.jct_avg_h:.2f} | {r.jct_p50_h:.2f} | {r.jct_p90_h:.2f} | {r.jct_p99_h:.1f} | "
                     f"{r.wait_avg_h:.2f} | {r.wait_p90_h:.2f} | {r.onprem_utilization:.0%} | {r.wall_s:.0f} |")
    for v in verdicts:
        name = v["spillover"]
        lines += ["", f"**{name}** ({'value of time per GPU-hour' if name == 'spillover' else 'value of time per job-hour'}):",
                  f"- baseline points on or above its frontier: {v['baseline_points_dominated']} "
                  f"(by policy: {', '.join(f'{k} {x:.0%}' for k, x in v['dominated_share_by_policy'].items())})"]
        if v["jct_limit_h"] is not None:
            lines.append(f"- at avg JCT <= {v['jct_limit_h']:.2f} h (No-Wait + 5%): best baseline "
                         f"{_f(v['best_baseline_cloud_gpu_h'])} cloud GPU-h, {name} {_f(v['spillover_cloud_gpu_h'])}"
                         f" (ratio {_f(v['ratio'], '.2f')}; target <= {TARGET_RATIO}: "
                         f"{'met' if v['ratio_target_met'] else 'not met'})")
        lines.append(f"- lower bound (on-prem at 100% from the first arrival to No-Wait's last completion): "
                     f"{v['lower_bound_cloud_gpu_h']:,.0f} cloud GPU-h; share of the best baseline's gap to it "
                     f"that {name} closes: {_f(v['gap_closed'], '.0%')}")
    return "\n".join(lines) + "\n"


def _f(x: float | None, fmt: str = ",.0f") -> str:
    return "n/a" if x is None else format(x, fmt)


def report(out: Path, s: Scenario, results: list[RunMetrics]) -> None:
    """results.json, results.csv, pareto.png, targets.json and summary.md for one scenario."""
    jobs = results[0].jobs
    title = (f"{s.workload}: {jobs:,} jobs, {s.onprem_nodes * 8} on-prem GPUs, cloud at one price"
             + (f", estimates +-{s.estimate_error:.0%}" if s.estimate_error else ""))
    write_results(out, results, title=title)
    verdicts = [check(results, s, name) for name in ("spillover", "spillover-job")]
    (out / "targets.json").write_text(json.dumps(verdicts, indent=2) + "\n")
    (out / "summary.md").write_text(summary_md(results, verdicts, s, jobs))
    print(summary_md(results, verdicts, s, jobs))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="gavel,philly,gavel-estimates")
    ap.add_argument("--limit", type=int, default=None,
                    help="replay only the first N jobs of each workload (0: all; default: the scenario's)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--queues", default="easy", help="baselines' on-prem queue: fifo, easy or both")
    ap.add_argument("--points", type=int, default=None,
                    help="at most this many values of each knob's sweep (0: all; default: the scenario's)")
    ap.add_argument("--out", type=Path, default=ROOT / "simulations" / "results")
    ap.add_argument("--replot", action="store_true", help="rewrite plots and summaries from OUT/<scenario>/results.json")
    args = ap.parse_args(argv)
    queues = [q for q in args.queues.split(",") if q]
    for name in args.scenario.split(","):
        s = SCENARIOS[name]
        if args.replot:
            report(args.out / name, s, [RunMetrics.from_row(r) for r in
                                         json.loads((args.out / name / "results.json").read_text())["runs"]])
            continue
        points = s.points if args.points is None else args.points
        limit = s.limit if args.limit is None else args.limit
        if points:
            s = thinned(s, points)
        runs = runs_of(s, queues)
        t0 = time.time()
        results: list[RunMetrics] = []
        with ProcessPoolExecutor(max_workers=args.workers) as pool:
            futures = {pool.submit(_one, (s, spec, limit or None)): spec for spec in runs}
            for f in as_completed(futures):
                m = f.result()
                results.append(m)
                print(f"[{name}] {futures[f].label:<32} cloud {m.cloud_gpu_hours:>10,.0f} GPU-h  JCT {m.jct_avg_h:7.2f} h"
                      f"  ({m.wall_s:.0f} s, {m.cycles} cycles)", flush=True)
        report(args.out / name, s, results)
        print(f"[{name}] {len(runs)} runs in {time.time() - t0:.0f} s; wrote {args.out / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
