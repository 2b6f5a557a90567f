"""The placement quality benchmark: Spillover against the Starburst baselines on the shared workloads, in the
reference setting (one on-prem cluster, unlimited cloud at one price), with the targets checked; and the
reproduction of the Starburst simulator's own figures by our baselines.

    .venv/bin/python -m spillover.simulations.bench_policies [--scenario gavel,philly,gavel-estimates,starburst] [--limit N]
        [--workers 2] [--out simulations/results]

Each scenario writes results.json, results.csv, pareto.png and summary.md under OUT/<scenario>/; the starburst
scenario writes reproduction.md and reproduction.json too. Every figure compared is over the measured window (all
jobs but the first and last 10% by submission), as the Starburst simulator counts them.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from spillover.scheduler.config import SpilloverConfig, load_config, parse_config
from spillover.simulations.baselines import LABELS
from spillover.simulations.metrics import RunMetrics
from spillover.simulations.simulate import RunSpec, run_one, with_hindsight, write_results
from spillover.simulations.workloads import load_workload, to_arrivals

ROOT = Path(__file__).resolve().parents[1]
WORKLOADS = ROOT.parent / "shared" / "data" / "workloads"
REFERENCE = ROOT / "config" / "simulate" / "reference.yaml"
JCT_SLACK = 1.05  # "at an average JCT no more than 5% above No-Wait"
TARGET_RATIO = 0.8  # "... at most 0.8 x the cloud GPU-hours of the best baseline at that JCT", hindsight included
PEER = ROOT / "simulations" / "results" / "starburst" / "starburst-simulator.json"
PEER_TOLERANCE = 0.03  # a reproduced row agrees when its cloud GPU-hours are within 3% of the peer's


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
    # exactly these replays instead of the sweeps (and --queues, --points)
    runs: tuple[RunSpec, ...] | None = None
    peer: Path | None = None  # figures of the same replays from another simulator, to compare with
    # each run replayed this many times, the workload shifted by an equal part of the loop's tick each time
    phases: int = 1


SCENARIOS = {
    "gavel": Scenario("gavel", "gavel-synth-dev.csv", 8, limit=2000),
    "philly": Scenario("philly", "philly-vc.csv", 25, limit=1000, points=4),
    "gavel-estimates": Scenario("gavel-estimates", "gavel-synth-dev.csv", 8, estimate_error=0.5, limit=1000, points=4),
    # whole workloads (a replay takes 1.5-5 ms of wall time per job); sweeps around No-Wait + 5%, no on-prem only
    # (its queue grows without end at these loads)
    "gavel-full": Scenario("gavel-full", "gavel-synth-dev.csv", 8, value_of_time=(2.0, 4.0, 8.0, 16.0),
                           value_of_job_time=(16.0, 24.0, 32.0, 48.0, 64.0, 128.0), wait_h=(0.5, 1.0, 2.0, 4.0),
                           k=(0.02, 0.04, 0.08, 0.16, 0.32), extra=()),
    "philly-full": Scenario("philly-full", "philly-vc.csv", 25, value_of_time=(4.0, 16.0),
                            value_of_job_time=(16.0, 32.0, 64.0, 128.0), wait_h=(1.0, 4.0), k=(0.02, 0.08, 0.32),
                            extra=()),
    # the settings the Starburst simulator was run with for the figures in PEER; the phase of the loop's 60 s
    # tick alone moves these rules' cloud GPU-hours by up to 5%, so each run is replayed at twelve phases
    "starburst": Scenario("starburst", "gavel-synth-dev.csv", 8, limit=2000, peer=PEER, phases=12, runs=(
        RunSpec("no-wait", None, "easy"), RunSpec("compute-wait", 0.04, "easy"), RunSpec("compute-wait", 0.08, "easy"),
        RunSpec("compute-wait", 0.16, "easy"), RunSpec("compute-wait", 0.08, "fifo"))),
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
    if s.runs is not None:
        return list(s.runs)
    out = [RunSpec("spillover", v) for v in s.value_of_time]
    out += [RunSpec("spillover-job", v) for v in s.value_of_job_time]
    for q in queues:
        out.append(RunSpec("no-wait", None, q))
        out += [RunSpec("constant-wait", v, q) for v in s.wait_h]
        out += [RunSpec("compute-wait", v, q) for v in s.k]
        out += [RunSpec(p, None, q) for p in s.extra]
    return out


def shifts_s(s: Scenario) -> list[float]:
    """The arrival shifts of the scenario's phases: 0 and equal parts of the loop's tick."""
    tick = scenario_config(s).loop.interval_s
    return [k * tick / s.phases for k in range(max(1, s.phases))]


def _one(args: tuple) -> RunMetrics:
    s, spec, limit, shift = args
    config = scenario_config(s)
    jobs, _ = load_workload(WORKLOADS / s.workload)
    jobs = jobs[:limit] if limit else jobs
    if shift:
        jobs = [replace(j, submit_time_s=j.submit_time_s + shift) for j in jobs]
    replay = to_arrivals(jobs, estimate_error=s.estimate_error, seed=0)
    m = run_one(config, replay, spec, estimates_exact=s.estimate_error is None)
    for r in (m, m.hindsight):
        if r is not None:
            r.arrival_shift_s = shift
    return m


def frontier(points: list[RunMetrics]) -> list[tuple[float, float]]:
    """The Pareto frontier (JCT, cloud GPU-hours) of a set of runs over the measured window, sorted by JCT."""
    pts = sorted((p.jct_avg_h, p.cloud_gpu_hours_measured) for p in points)
    out: list[tuple[float, float]] = []
    for jct, cost in pts:
        if not out or cost < out[-1][1]:
            out.append((jct, cost))
    return out


def cost_at(front: list[tuple[float, float]], jct: float) -> float | None:
    """The least cloud GPU-hours the frontier reaches at an average JCT of at most `jct` (None: none that fast)."""
    ok = [c for j, c in front if j <= jct + 1e-9]
    return min(ok) if ok else None


def best_at(points: list[RunMetrics], jct: float) -> RunMetrics | None:
    """The run with the least cloud GPU-hours among those with an average JCT of at most `jct`."""
    ok = [p for p in points if p.jct_avg_h <= jct + 1e-9]
    return min(ok, key=lambda p: (p.cloud_gpu_hours_measured, p.jct_avg_h)) if ok else None


def _name(r: RunMetrics) -> str:
    shifted = f"arrivals +{r.arrival_shift_s:g} s" if r.arrival_shift_s else ""
    return " ".join(x for x in (r.policy, r.queue, r.setting, shifted) if x)


def check(results: list[RunMetrics], s: Scenario, spillover: str) -> dict:
    """The targets for one of Spillover's curves, over the measured window: dominance, the 0.8x rule at No-Wait's
    JCT + 5% against the best of every baseline (hindsight variants included), and the share of that baseline's
    gap to the lower bound that Spillover closes."""
    results = with_hindsight(results)
    spill = [r for r in results if r.policy == spillover]
    base = [r for r in results if not r.policy.startswith("spillover") and r.policy != "onprem-only"]
    front = frontier(spill)

    def beaten(b: RunMetrics) -> bool:
        c = cost_at(front, b.jct_avg_h)
        return c is not None and c <= b.cloud_gpu_hours_measured + 1e-6

    dominated = [beaten(b) for b in base]
    no_wait = [r for r in base if r.policy == "no-wait"]
    limit = JCT_SLACK * min(r.jct_avg_h for r in no_wait) if no_wait else None
    best = best_at(base, limit) if limit else None
    best_base = best.cloud_gpu_hours_measured if best is not None else None
    ours = cost_at(front, limit) if limit else None
    # strict: no plan that finishes as early as No-Wait's does can send less of the measured jobs to the cloud
    lb = max((r.lower_bound_measured_at_makespan for r in no_wait), default=0.0)
    closed = None
    if best_base is not None and ours is not None and best_base > lb:
        closed = (best_base - ours) / (best_base - lb)
    by_policy = {}
    for p in dict.fromkeys(r.policy for r in base):
        rs = [r for r in base if r.policy == p]
        by_policy[p] = sum(beaten(r) for r in rs) / len(rs)
    return {
        "scenario": s.name, "spillover": spillover, "window": "measured jobs (all but the first and last 10%)",
        "baseline_points_dominated": f"{sum(dominated)}/{len(dominated)}",
        "dominated_share_by_policy": by_policy,
        "jct_limit_h": limit, "best_baseline": _name(best) if best is not None else None,
        "best_baseline_cloud_gpu_h": best_base, "spillover_cloud_gpu_h": ours,
        "ratio": (ours / best_base) if ours is not None and best_base else None, "target_ratio": TARGET_RATIO,
        "ratio_target_met": (ours is not None and best_base is not None and ours <= TARGET_RATIO * best_base),
        "lower_bound_cloud_gpu_h": lb,
        "lower_bound_all_jobs_cloud_gpu_h": max((r.lower_bound_at_makespan for r in no_wait), default=0.0),
        "lower_bound_arrival_window_cloud_gpu_h": max(r.lower_bound_cloud_gpu_hours for r in results),
        "gap_closed": closed,
        "wall_s_per_run": {r.policy + (" " + r.setting if r.setting else ""): round(r.wall_s, 1) for r in results
                           if not r.policy.endswith("-hindsight")},
    }


def summary_md(results: list[RunMetrics], verdicts: list[dict], s: Scenario, jobs: int) -> str:
    results = with_hindsight(results)
    measured = results[0].measured if results else 0
    lines = [f"# {s.name}: {jobs:,} jobs of {s.workload}, {s.onprem_nodes * 8} on-prem GPUs"
             + (f", runtime estimates +-{s.estimate_error:.0%}" if s.estimate_error else ""), "",
             f"Measured window: the {measured:,} jobs left when the first and last 10% by submission are set aside; "
             "cloud GPU-h, JCT and wait are theirs. All-jobs figures are the `all` columns. Rows marked hindsight "
             "book every cloud job as started at its submission (no scheduler can), from the same replay as the "
             "plain rule.", "",
             "| policy | queue | setting | cloud GPU-h | all: cloud GPU-h | cloud $ (all) | avg JCT h | all: avg JCT h "
             "| p50 | p90 | p99 | avg wait h | p90 wait | on-prem util | wall s |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    # a setting's phases together, settings in the order of their fastest phase
    fastest: dict[tuple[str, str, str], float] = {}
    for r in results:
        key = (r.policy, r.queue, r.setting)
        fastest[key] = min(fastest.get(key, r.jct_avg_h), r.jct_avg_h)
    for r in sorted(results, key=lambda r: (r.policy, r.queue, fastest[(r.policy, r.queue, r.setting)], r.setting,
                                            r.arrival_shift_s)):
        shifted = f" (arrivals +{r.arrival_shift_s:g} s)" if r.arrival_shift_s else ""
        lines.append(f"| {LABELS.get(r.policy, r.policy)} | {r.queue} | {r.setting}{shifted} | "
                     f"{r.cloud_gpu_hours_measured:,.0f} | {r.cloud_gpu_hours:,.0f} | {r.cloud_usd:,.0f} | "
                     f"{r.jct_avg_h:.2f} | {r.jct_avg_all_h:.2f} | {r.jct_p50_h:.2f} | {r.jct_p90_h:.2f} | "
                     f"{r.jct_p99_h:.1f} | {r.wait_avg_h:.2f} | {r.wait_p90_h:.2f} | {r.onprem_utilization:.0%} | "
                     f"{r.wall_s:.0f} |")
    for v in verdicts:
        name = v["spillover"]
        lines += ["", f"**{name}** ({'value of time per GPU-hour' if name == 'spillover' else 'value of time per job-hour'}):",
                  f"- baseline points on or above its frontier: {v['baseline_points_dominated']} "
                  f"(by policy: {', '.join(f'{k} {x:.0%}' for k, x in v['dominated_share_by_policy'].items())})"]
        if v["jct_limit_h"] is not None:
            lines.append(f"- at avg JCT <= {v['jct_limit_h']:.2f} h (No-Wait + 5%): best baseline "
                         f"{_f(v['best_baseline_cloud_gpu_h'])} cloud GPU-h ({v['best_baseline'] or 'none'}), "
                         f"{name} {_f(v['spillover_cloud_gpu_h'])} (ratio {_f(v['ratio'], '.2f')}; target <= "
                         f"{v['target_ratio']}: {'met' if v['ratio_target_met'] else 'not met'})")
        lines.append(f"- lower bound on the measured jobs' cloud GPU-h (on-prem at 100% from the first measured "
                     f"submission to No-Wait's last completion): {v['lower_bound_cloud_gpu_h']:,.0f}; share of the "
                     f"best baseline's gap to it that {name} closes: {_f(v['gap_closed'], '.0%')}")
    return "\n".join(lines) + "\n"


def _f(x: float | None, fmt: str = ",.0f") -> str:
    return "n/a" if x is None else format(x, fmt)


@dataclass(frozen=True)
class PeerRow:
    """One figure pair another simulator reported for a run we can replay."""

    policy: str
    queue: str
    setting: str
    label: str  # as the peer names it
    cloud_gpu_hours: float  # over its measured window
    jct_avg_h: float


@dataclass(frozen=True)
class Agreement:
    """One of the peer's rows against ours: the mean of our replays at each phase of the loop's tick."""

    label: str
    run: str  # our policy, queue and setting
    peer_cloud_gpu_h: float
    ours_cloud_gpu_h: float | None
    cloud_diff: float | None  # (ours - peer) / peer
    peer_jct_h: float
    ours_jct_h: float | None
    jct_diff: float | None
    within: bool  # cloud GPU-hours within PEER_TOLERANCE
    phases: int = 0
    ours_cloud_min: float | None = None
    ours_cloud_max: float | None = None


@dataclass(frozen=True)
class Peer:
    """Another simulator's figures for replays of ours: where they come from, on how many jobs, and the rows."""

    source: str
    jobs: int
    rows: list[PeerRow]


def load_peer(path: Path) -> Peer:
    data = json.loads(path.read_text())
    return Peer(data["source"], int(data["jobs"]), [PeerRow(**r) for r in data["rows"]])


def agreement(results: list[RunMetrics], peer: list[PeerRow], tolerance: float = PEER_TOLERANCE) -> list[Agreement]:
    """Each peer row against our runs of the same policy, queue and setting (measured window), averaged over the
    phases they were replayed at."""
    ours: dict[tuple[str, str, str], list[RunMetrics]] = {}
    for r in with_hindsight(results):
        ours.setdefault((r.policy, r.queue, r.setting), []).append(r)
    out = []
    for p in peer:
        rs = ours.get((p.policy, p.queue, p.setting), [])
        run = " ".join(x for x in (p.policy, p.queue, p.setting) if x)
        if not rs:
            out.append(Agreement(p.label, run, p.cloud_gpu_hours, None, None, p.jct_avg_h, None, None, False))
            continue
        cloud = [r.cloud_gpu_hours_measured for r in rs]
        mean = sum(cloud) / len(cloud)
        jct = sum(r.jct_avg_h for r in rs) / len(rs)
        cd = (mean - p.cloud_gpu_hours) / p.cloud_gpu_hours
        out.append(Agreement(p.label, run, p.cloud_gpu_hours, mean, cd, p.jct_avg_h, jct,
                             (jct - p.jct_avg_h) / p.jct_avg_h, abs(cd) <= tolerance, len(rs), min(cloud), max(cloud)))
    return out


def agreement_md(rows: list[Agreement], peer: Peer, s: Scenario, jobs: int, measured: int) -> str:
    lines = [f"# Reproducing the Starburst simulator: {jobs:,} jobs of {s.workload}, {s.onprem_nodes} nodes x 8 GPUs",
             "", f"Peer: {peer.source}", ""]
    if jobs != peer.jobs:
        lines += [f"**Not comparable: the peer replayed {peer.jobs:,} jobs, these figures are for {jobs:,}.**", ""]
    lines += [f"Ours: `python -m spillover.simulations.bench_policies --scenario {s.name} --workers 2`, the real control loop "
              f"with our baselines. Both over the measured window ({measured:,} jobs: the first and last 10% by "
              f"submission left out). Ours is the mean over {s.phases} replay(s), the workload shifted by an equal "
              f"part of the loop's 60 s tick each time (the range is in its own column). A row agrees when its "
              f"cloud GPU-hours are within {PEER_TOLERANCE:.0%}.", "",
              "| policy | ours: run | Starburst cloud GPU-h | ours | diff | ours over the phases | Starburst avg JCT h "
              f"| ours | diff | within {PEER_TOLERANCE:.0%} |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for a in rows:
        spread = f"{_f(a.ours_cloud_min)}–{_f(a.ours_cloud_max)} ({a.phases})" if a.phases > 1 else ""
        lines.append(f"| {a.label} | {a.run} | {a.peer_cloud_gpu_h:,.0f} | {_f(a.ours_cloud_gpu_h)} | "
                     f"{_f(a.cloud_diff, '+.1%')} | {spread} | {a.peer_jct_h:.2f} | {_f(a.ours_jct_h, '.2f')} | "
                     f"{_f(a.jct_diff, '+.1%')} | {'yes' if a.within else 'no'} |")
    return "\n".join(lines) + "\n"


def report(out: Path, s: Scenario, results: list[RunMetrics]) -> None:
    """results.json, results.csv, pareto.png, targets.json and summary.md for one scenario (and the reproduction
    against its peer's figures, if it has any)."""
    results = with_hindsight(results)
    jobs = results[0].jobs
    title = (f"{s.workload}: {jobs:,} jobs, {s.onprem_nodes * 8} on-prem GPUs, cloud at one price"
             + (f", estimates +-{s.estimate_error:.0%}" if s.estimate_error else "") + "; measured window")
    peer = load_peer(s.peer) if s.peer is not None else None
    marks = [(p.jct_avg_h, p.cloud_gpu_hours) for p in peer.rows] if peer is not None else []
    write_results(out, results, title=title, marks=marks, marks_label="Starburst simulator (its own code)")
    verdicts = [check(results, s, name) for name in ("spillover", "spillover-job")
                if any(r.policy == name for r in results)]
    if verdicts:
        (out / "targets.json").write_text(json.dumps(verdicts, indent=2) + "\n")
    (out / "summary.md").write_text(summary_md(results, verdicts, s, jobs))
    print(summary_md(results, verdicts, s, jobs))
    if peer is not None:
        rows = agreement(results, peer.rows)
        (out / "reproduction.json").write_text(json.dumps(
            {"peer": peer.source, "peer_jobs": peer.jobs, "jobs": jobs, "tolerance": PEER_TOLERANCE,
             "rows": [asdict(a) for a in rows]}, indent=2) + "\n")
        md = agreement_md(rows, peer, s, jobs, results[0].measured)
        (out / "reproduction.md").write_text(md)
        print(md)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="gavel,philly,gavel-estimates,starburst")
    ap.add_argument("--limit", type=int, default=None,
                    help="replay only the first N jobs of each workload (0: all; default: the scenario's)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--queues", default="easy", help="baselines' on-prem queue: fifo, easy or both")
    ap.add_argument("--points", type=int, default=None,
                    help="at most this many values of each knob's sweep (0: all; default: the scenario's)")
    ap.add_argument("--phases", type=int, default=None,
                    help="replay each run at this many phases of the loop's tick (default: the scenario's)")
    ap.add_argument("--out", type=Path, default=ROOT / "simulations" / "results")
    ap.add_argument("--replot", action="store_true", help="rewrite plots and summaries from OUT/<scenario>/results.json")
    args = ap.parse_args(argv)
    queues = [q for q in args.queues.split(",") if q]
    unknown = [n for n in args.scenario.split(",") if n not in SCENARIOS]
    if unknown:
        ap.error(f"--scenario: unknown {', '.join(unknown)}; valid: {', '.join(SCENARIOS)}")
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
        if args.phases is not None:
            s = replace(s, phases=args.phases)
        runs = runs_of(s, queues)
        t0 = time.time()
        results: list[RunMetrics] = []
        with ProcessPoolExecutor(max_workers=args.workers) as pool:
            futures = {pool.submit(_one, (s, spec, limit or None, shift)): spec for shift in shifts_s(s)
                       for spec in runs}
            for f in as_completed(futures):
                m = f.result()
                results.append(m)
                print(f"[{name}] {futures[f].label:<32} +{m.arrival_shift_s:>2.0f} s  cloud "
                      f"{m.cloud_gpu_hours_measured:>10,.0f} GPU-h  JCT {m.jct_avg_h:7.2f} h (measured jobs)  "
                      f"({m.wall_s:.0f} s, {m.cycles} cycles)", flush=True)
        report(args.out / name, s, results)
        print(f"[{name}] {len(runs)} runs in {time.time() - t0:.0f} s; wrote {args.out / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
