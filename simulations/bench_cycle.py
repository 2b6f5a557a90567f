"""Benchmark: does a cycle slow down as the store's history grows?

For each history size N, replays the first N jobs of a workload through the real loop into a store (SQLite file by
default, or `--store-url`), so the store holds N finished jobs with every event, action and ledger row a replay
leaves. Then a new loop starts on that store (its start-up is timed: it loads only what is not finished), on-prem
is filled with long jobs and a queue is left waiting, and it measures:

- steady cycles: nothing changes (the loop re-plans now and then, as it does in production); commits counted;
- busy cycles: a job arrives every cycle and is placed.

On SQLite every history's store is open at once and they take their cycles in turns (`--rounds`), so a change in
the machine's speed meanwhile falls on all of them alike.

    .venv/bin/python -m spillover.simulations.bench_cycle [--history 0,5000,10000,20000] [--cycles 300] [--rounds 10]
        [--store-url postgresql+psycopg://...] [--out simulations/results/cycle]

Writes results.json, summary.md and cycle.png (cycle time against history) under OUT.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from spillover.scheduler.clock import SimClock
from spillover.scheduler.config import SpilloverConfig, load_config, parse_config
from spillover.scheduler.loop import ControlLoop
from spillover.scheduler.model import JobSpec, JobState
from spillover.scheduler.store import Store
from spillover.scheduler.wiring import build_providers
from spillover.simulations.baselines import baseline_solver, rule
from spillover.simulations.runner import run_simulation
from spillover.simulations.workloads import load_workload, to_arrivals

ROOT = Path(__file__).resolve().parents[1]
WORKLOADS = ROOT.parent / "shared" / "data" / "workloads"
REFERENCE = ROOT / "config" / "simulate" / "reference.yaml"


def _config(url: str) -> SpilloverConfig:
    base = load_config(REFERENCE)
    data = base.model_dump(mode="json", by_alias=True, exclude_none=True)
    data["store"] = {"url": url}
    data["loop"]["solver_bound"] = False
    data["queues"] = [{"name": q} for q in ("research", "prod", "interns", "probe")]
    # waiting is worth little: the probe's queue stays queued rather than bursting
    data["policy"]["value_of_time_per_gpu_hour"] = 0.05
    return parse_config(data, source="bench-cycle", catalog=base.catalog)


def _probe(i: int, gpus: int, hours: float) -> JobSpec:
    return JobSpec(name=f"probe-{i:05d}", queue="probe", image="img:1", gpus=gpus, estimated_runtime_s=hours * 3600)


@dataclass
class Bench:
    """One store with its history and a loop started on it, and the cycles measured on it so far."""
    history: int
    replay_s: float
    start_s: float
    store: Store
    clock: SimClock
    loop: ControlLoop
    config: SpilloverConfig
    base: int
    steady: list[float] = field(default_factory=list)
    steady_cpu: list[float] = field(default_factory=list)
    commits: int = 0
    busy: list[float] = field(default_factory=list)
    busy_cpu: list[float] = field(default_factory=list)


def prepare(url: str, history: int, workload: Path) -> Bench:
    """A store holding the first `history` jobs of the workload, finished, and a new loop on it with on-prem full
    and a queue waiting."""
    config = _config(url)
    store = Store(url)
    clock = SimClock()
    if history:
        jobs, _ = load_workload(workload)
        replay = to_arrivals(jobs[:history], seed=0)
        t0 = time.perf_counter()
        # the history is No-Wait's (the quickest to make); what is measured after it is Spillover's own solver
        run_simulation(config, replay.arrivals, store, clock=clock, solver=baseline_solver(rule("no-wait")),
                       providers=build_providers(config, clock, runtime=replay.runtime(config.speed)),
                       max_sim_s=math.inf)
        replay_s = time.perf_counter() - t0
    else:
        replay_s = 0.0
    finished = sum(n for st, n in store.count_by_state().items() if st.terminal)
    providers = build_providers(config, clock)
    t0 = time.perf_counter()
    loop = ControlLoop(config, store, providers, clock)
    start_s = time.perf_counter() - t0
    base = 10**6 * (history + 1)
    fill = [_probe(base + i, 8, 1000.0) for i in range(8)]
    queue = [_probe(base + 100 + i, 8, 2.0) for i in range(10)]
    loop.submitted(store.submit(fill + queue, now=clock.now()))
    for _ in range(3):
        clock.advance(config.loop.interval_s)
        loop.run_cycle()
    return Bench(finished, replay_s, start_s, store, clock, loop, config, base)


def sample(b: Bench, steady: int, busy: int) -> None:
    """Run `steady` steady cycles, then `busy` with an arrival each, timing every one."""
    interval = b.config.loop.interval_s
    for _ in range(steady):
        b.clock.advance(interval)
        t0, c0 = time.perf_counter(), time.process_time()
        r = b.loop.run_cycle()
        b.steady.append(time.perf_counter() - t0)
        b.steady_cpu.append(time.process_time() - c0)
        b.commits += r.commits
    for _ in range(busy):
        b.clock.advance(interval)
        b.loop.submitted(b.store.submit([_probe(b.base + 1000 + len(b.busy), 1, 1.0)], now=b.clock.now()))
        t0, c0 = time.perf_counter(), time.process_time()
        b.loop.run_cycle()
        b.busy.append(time.perf_counter() - t0)
        b.busy_cpu.append(time.process_time() - c0)


def summary(b: Bench) -> dict:
    pending = b.store.count_by_state().get(JobState.PENDING, 0)
    b.store.close()
    return {
        "history_jobs": b.history, "replay_s": round(b.replay_s, 1), "start_ms": round(b.start_s * 1e3, 2),
        "steady_ms_median": round(statistics.median(b.steady) * 1e3, 3),
        "steady_ms_p90": round(sorted(b.steady)[int(0.9 * len(b.steady))] * 1e3, 3),
        "steady_cpu_ms_median": round(statistics.median(b.steady_cpu) * 1e3, 3),
        "steady_commits": b.commits, "steady_cycles": len(b.steady),
        "busy_ms_median": round(statistics.median(b.busy) * 1e3, 3),
        "busy_cpu_ms_median": round(statistics.median(b.busy_cpu) * 1e3, 3), "busy_cycles": len(b.busy),
        "pending_at_end": pending,
    }


def measure(url: str, history: int, workload: Path, cycles: int) -> dict:
    b = prepare(url, history, workload)
    sample(b, cycles, max(1, cycles // 3))
    return summary(b)


def report(out: Path, rows: list[dict], backend: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"backend": backend, "runs": rows}, indent=2) + "\n")
    base = rows[0]
    lines = [f"# Cycle time against history ({backend})", "",
             "Medians over the cycles; CPU is the process's own time (what the machine's other load does not "
             "change), wall the elapsed time.", "",
             "| finished jobs in the store | loop start ms | steady cycle, wall ms | CPU ms | vs none (CPU) | "
             "commits in steady cycles | cycle with an arrival, wall ms | CPU ms | vs none (CPU) |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['history_jobs']:,} | {r['start_ms']:.1f} | {r['steady_ms_median']:.3f} | "
                     f"{r['steady_cpu_ms_median']:.3f} | "
                     f"{r['steady_cpu_ms_median'] / base['steady_cpu_ms_median']:.2f}x | "
                     f"{r['steady_commits']} of {r['steady_cycles']} | {r['busy_ms_median']:.3f} | "
                     f"{r['busy_cpu_ms_median']:.3f} | {r['busy_cpu_ms_median'] / base['busy_cpu_ms_median']:.2f}x |")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    xs = [r["history_jobs"] for r in rows]
    ax.plot(xs, [r["steady_cpu_ms_median"] for r in rows], "o-", label="steady cycle (median CPU)")
    ax.plot(xs, [r["busy_cpu_ms_median"] for r in rows], "s-", label="cycle with an arrival (median CPU)")
    ax.plot(xs, [r["start_ms"] for r in rows], "^--", label="loop start-up")
    ax.set_xlabel("finished jobs in the store")
    ax.set_ylabel("ms")
    ax.set_ylim(bottom=0)
    ax.set_title(f"Cycle time against the store's history ({backend})", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "cycle.png")
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--history", default="0,5000,10000,20000")
    ap.add_argument("--cycles", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=10, help="turns the histories take (SQLite only)")
    ap.add_argument("--workload", type=Path, default=WORKLOADS / "gavel-synth-dev.csv")
    ap.add_argument("--store-url", default=None, help="a PostgreSQL database to use (emptied first); default: a "
                    "new SQLite file per history size")
    ap.add_argument("--out", type=Path, default=ROOT / "simulations" / "results" / "cycle")
    args = ap.parse_args(argv)
    sizes = [int(x) for x in args.history.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        measure(f"sqlite:///{Path(tmp) / 'warm-up.db'}", 0, args.workload, args.cycles)  # imports, caches
        if args.store_url:  # one database: one history at a time
            for n in sizes:
                _empty(args.store_url)
                rows.append(measure(args.store_url, n, args.workload, args.cycles))
                print(json.dumps(rows[-1]), flush=True)
        else:
            # every history's store open at once, their cycles taken in turns, so that a change in the machine's
            # speed while the benchmark runs (other load, frequency) falls on every history alike
            benches = [prepare(f"sqlite:///{Path(tmp) / f'history-{i}.db'}", n, args.workload)
                       for i, n in enumerate(sizes)]
            rounds = max(1, args.rounds)
            # all steady cycles first: an arrival's job would change what the steady cycles after it see
            for steady, busy in ((max(1, args.cycles // rounds), 0), (0, max(1, args.cycles // 3 // rounds))):
                for _ in range(rounds):
                    for b in benches:
                        sample(b, steady, busy)
            rows = [summary(b) for b in benches]
            for r in rows:
                print(json.dumps(r), flush=True)
    report(args.out, rows, "PostgreSQL" if args.store_url else "SQLite file")
    return 0


def _empty(url: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


if __name__ == "__main__":
    raise SystemExit(main())
