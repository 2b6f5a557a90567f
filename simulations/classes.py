"""Where a policy wins or loses: a replay's measured jobs split by size and runtime class, each class's average JCT,
wait and cloud GPU-hours, and two replays side by side.

    .venv/bin/python -m spillover.simulations.classes --scenario gavel --limit 0 \\
        --run spillover-job=32 --run compute-wait:easy=0.08 [--hindsight] [--out simulations/results/classes.md]

A baseline run may be booked as its hindsight variant (`--hindsight`: a job that ran in the cloud counts as
started at its submission, as the Starburst simulator's exact wait prediction does).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from spillover.scheduler.clock import SimClock
from spillover.scheduler.config import CloudCluster, SpilloverConfig
from spillover.scheduler.model import JobState
from spillover.scheduler.store import Job, Store
from spillover.scheduler.wiring import build_providers
from spillover.simulations.baselines import baseline_solver, rule
from spillover.simulations.metrics import TRIM
from spillover.simulations.runner import run_simulation
from spillover.simulations.workloads import Replay

HOUR = 3600.0
GPU_CLASSES = ((1, 1), (2, 2), (4, 4), (8, 8), (9, 10**6))
RUNTIME_CLASSES = ((0.0, 1.0), (1.0, 10.0), (10.0, 100.0), (100.0, math.inf))


@dataclass
class ClassRow:
    gpus: str
    runtime: str
    jobs: int
    jct_h: float  # average
    wait_h: float  # average
    cloud_share: float  # of the class's jobs
    cloud_gpu_h: float


def _gpu_label(lo: int, hi: int) -> str:
    return f"{lo}" if lo == hi else f"{lo}+"


def _runtime_label(lo: float, hi: float) -> str:
    return f"{lo:g}-{hi:g} h" if math.isfinite(hi) else f">= {lo:g} h"


def by_class(store: Store, config: SpilloverConfig, true_runtime_s: dict[str, float], *,
             hindsight: bool = False) -> list[ClassRow]:
    """The measured jobs (all but the first and last 10% by submission) by GPUs and true runtime."""
    clouds = {c.name for c in config.clusters if isinstance(c, CloudCluster)}
    jobs = sorted(store.jobs(), key=lambda j: (j.submitted_at, j.id))
    cut = int(len(jobs) * TRIM)
    measured = [j for j in jobs[cut:len(jobs) - cut] if j.state == JobState.SUCCEEDED]
    rows = []
    for glo, ghi in GPU_CLASSES:
        for rlo, rhi in RUNTIME_CLASSES:
            group = [j for j in measured if glo <= j.gpus <= ghi
                     and rlo <= true_runtime_s.get(j.id, j.spec.estimated_runtime_s) / HOUR < rhi]
            if not group:
                continue
            waits = [_wait_h(j, clouds, hindsight) for j in group]
            ran = [(j.finished_at - j.started_at) / HOUR for j in group]
            cloud = [j for j in group if j.cluster in clouds]
            rows.append(ClassRow(_gpu_label(glo, ghi), _runtime_label(rlo, rhi), len(group),
                                 sum(w + r for w, r in zip(waits, ran)) / len(group), sum(waits) / len(group),
                                 len(cloud) / len(group),
                                 sum(j.gpus * (j.finished_at - j.started_at) / HOUR for j in cloud)))
    return rows


def _wait_h(j: Job, clouds: set[str], hindsight: bool) -> float:
    if hindsight and j.cluster in clouds:
        return 0.0
    return (j.started_at - j.submitted_at) / HOUR


def compare(a: Sequence[ClassRow], b: Sequence[ClassRow], names: tuple[str, str]) -> str:
    """Markdown: each class's jobs, JCT and cloud GPU-hours under two replays, and the differences."""
    bs = {(r.gpus, r.runtime): r for r in b}
    lines = [f"| GPUs | runtime | jobs | avg JCT h: {names[0]} | {names[1]} | difference | cloud GPU-h: {names[0]} | "
             f"{names[1]} | difference | in the cloud: {names[0]} | {names[1]} |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    tot = [0, 0.0, 0.0, 0.0, 0.0]
    for r in a:
        o = bs.get((r.gpus, r.runtime))
        if o is None:
            continue
        lines.append(f"| {r.gpus} | {r.runtime} | {r.jobs:,} | {r.jct_h:.2f} | {o.jct_h:.2f} | "
                     f"{r.jct_h - o.jct_h:+.2f} | {r.cloud_gpu_h:,.0f} | {o.cloud_gpu_h:,.0f} | "
                     f"{r.cloud_gpu_h - o.cloud_gpu_h:+,.0f} | {r.cloud_share:.0%} | {o.cloud_share:.0%} |")
        tot[0] += r.jobs
        tot[1] += r.jct_h * r.jobs
        tot[2] += o.jct_h * r.jobs
        tot[3] += r.cloud_gpu_h
        tot[4] += o.cloud_gpu_h
    if tot[0]:
        lines.append(f"| all | | {tot[0]:,} | {tot[1] / tot[0]:.2f} | {tot[2] / tot[0]:.2f} | "
                     f"{(tot[1] - tot[2]) / tot[0]:+.2f} | {tot[3]:,.0f} | {tot[4]:,.0f} | {tot[3] - tot[4]:+,.0f} | | |")
    return "\n".join(lines) + "\n"


def replay(config: SpilloverConfig, replay: Replay, run: str) -> Store:
    """One replay under `run`: `spillover-job=V`, `spillover=V`, or a baseline `POLICY:QUEUE=KNOB`."""
    from spillover.simulations.simulate import with_queues

    policy, _, value = run.partition("=")
    policy, _, queue = policy.partition(":")
    changes: dict[str, float] = {}
    solver = None
    if policy == "spillover-job":
        changes = {"value_of_time_per_job_hour": float(value)}
    elif policy == "spillover":
        changes = {"value_of_time_per_gpu_hour": float(value)}
    else:
        knob = {"wait_h": float(value)} if policy == "constant-wait" else (
            {"k": float(value)} if policy == "compute-wait" else {})
        solver = baseline_solver(rule(policy, **knob), queue or "easy")
    cfg = with_queues(config, {a.spec.queue for a in replay.arrivals}, **changes)
    store = Store(cfg.store.url)
    clock = SimClock()
    run_simulation(cfg, replay.arrivals, store, clock=clock, solver=solver, resolve_every_s=math.inf,
                   providers=build_providers(cfg, clock, runtime=replay.runtime(cfg.speed)), max_sim_s=math.inf)
    return store


def main(argv: list[str] | None = None) -> int:
    from spillover.simulations.bench_policies import SCENARIOS, WORKLOADS, scenario_config
    from spillover.simulations.workloads import load_workload, to_arrivals

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="gavel", choices=sorted(SCENARIOS))
    ap.add_argument("--limit", type=int, default=0, help="the first N jobs (0: all)")
    ap.add_argument("--run", action="append", required=True, help="two runs: spillover-job=V, POLICY:QUEUE=KNOB")
    ap.add_argument("--hindsight", action="store_true", help="book the second run as its hindsight variant")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if len(args.run) != 2:
        ap.error("--run: give exactly two runs")
    s = SCENARIOS[args.scenario]
    config = scenario_config(s)
    jobs, _ = load_workload(WORKLOADS / s.workload)
    rp = to_arrivals(jobs[:args.limit] if args.limit else jobs, estimate_error=s.estimate_error, seed=0)
    rows = []
    for i, run in enumerate(args.run):
        store = replay(config, rp, run)
        rows.append(by_class(store, config, rp.true_runtime_s, hindsight=args.hindsight and i == 1))
        store.close()
    names = (args.run[0], args.run[1] + (" (hindsight)" if args.hindsight else ""))
    title = f"# {s.workload}, {'all' if not args.limit else f'first {args.limit:,}'} jobs: {names[0]} against {names[1]}\n\n"
    text = title + compare(rows[0], rows[1], names)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
