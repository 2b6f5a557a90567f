"""Placement benchmark: a realistic queue against busy on-prem clusters and cloud pools; greedy vs the solver vs LP.

    python -m spillover.simulations.bench_placement --jobs 1000,10000,50000 --targets 50 [--runs 3] [--seed 0]
    python -m spillover.simulations.bench_placement --jobs 1000,10000 --targets 50 --runs 3 --work-limit 2
    python -m spillover.simulations.bench_placement --small 3000 [--seed 0]
    python -m spillover.simulations.bench_placement --jobs 1000 --targets 10 --detail
    python -m spillover.simulations.bench_placement --replay-problems problems.pkl [--reference plans.json] [--work-limit 2]

The instance: 2-3 on-prem clusters of 8-GPU nodes, mostly busy, whose running jobs end over the next hours;
the other targets are cloud pools drawn from the bundled price catalog (several GPU types, on-demand and
spot); jobs of 1/2/4/8 GPUs (p = .7/.1/.15/.05) plus a few 2 x 8 gangs, runtimes log-uniform in 0.5-30 h.
Each size prints one line per run: the decision's time (`solve` without the LP bound, as a replay runs it),
its objective against greedy's, and its gap to the LP bound priced by the plan's own forecast (computed
separately, timed on its own; `--with-bound` also times `solve` computing it, as the loop does to log it). `--small N` instead solves N small random problems (1-50 pending jobs, 2-6
targets, on-prem load anywhere from idle to full), the common case of a replay that solves at every arrival
and job end, and prints the mean time per solve. `--work-limit X` runs the same instances in the deterministic
mode (`Policy.work_limit`, which replaces the time limit) and says whether a second solve gave the same plan.
`--replay-problems PATH` solves every problem of a pickled `list[PlacementProblem]` (as captured from replays)
twice, with the time limit and in the deterministic mode (`--work-limit`, default 2), without the LP bound as
replays solve, and prints the CPU time per solve (mean, median, p90); with `--reference FILE` it compares every
plan with the ones stored there (decisions, nodes, start times, new nodes, objective) and says how many differ,
or stores them there when the file does not exist yet.
It prints figures; it does not pass or fail.
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import math
import pickle
import random
import statistics
import time
from dataclasses import replace
from pathlib import Path

from spillover.placement import (
    JobDemand,
    Node,
    PlacementProblem,
    Plan,
    Policy,
    Release,
    Target,
    check_plan,
    lp_bound,
    solve,
    solve_greedy,
)
from spillover.placement.assemble import plan_wait_costs
from spillover.placement.cpsat import cpsat_settled

CATALOG = Path(__file__).resolve().parent.parent / "config" / "gpu_instances.csv"
SPEED = {"H100": 2.0, "A100": 1.0, "A100-80GB": 1.1, "V100": 0.5, "V100-32GB": 0.55, "A10G": 0.45, "L4": 0.4,
         "T4": 0.25}
ONPREM_SHAPES = [("A100", 96, 1024), ("H100", 192, 2048), ("A100", 128, 1024)]


@functools.cache
def _catalog() -> list[dict[str, str]]:
    with CATALOG.open() as f:
        return [r for r in csv.DictReader(f)]


def _onprem(rng: random.Random, k: int, n_nodes: int) -> Target:
    gpu, cpu, mem = ONPREM_SHAPES[k % len(ONPREM_SHAPES)]
    nodes: list[Node] = []
    releases: list[Release] = []
    for n in range(n_nodes):
        name = f"op{k}-n{n:03d}"
        used = 0
        busy = rng.random()
        target_used = 8 if busy < 0.6 else (rng.choice([4, 6, 7]) if busy < 0.9 else 0)
        while used < target_used:
            g = min(rng.choice([1, 2, 4, 8]), target_used - used)
            used += g
            # Running jobs end over the next hours: many soon, a long tail.
            releases.append(Release(round(math.exp(rng.uniform(math.log(0.1), math.log(24))), 2), name, g,
                                    g * cpu / 8, g * mem / 8))
        free = 8 - used
        nodes.append(Node(name, free, free * cpu / 8, free * mem / 8, idle=used == 0))
    return Target(f"onprem-{k}", "onprem", gpu, 8, cpu, mem, 0.0, nodes=tuple(nodes), speed=SPEED[gpu],
                  releases=tuple(releases), label=f"onprem-{'abc'[k] if k < 3 else k}")


def _cloud(rng: random.Random, rows: list[dict[str, str]], k: int) -> Target:
    r = rows[k % len(rows)]
    spot = bool(r["spot_usd_per_hour"]) and (k // len(rows) + k) % 3 == 0
    price = float(r["spot_usd_per_hour"] if spot else r["on_demand_usd_per_hour"])
    gpn = int(r["gpus"])
    name = f"{r['cloud']}-{r['region']}/{r['instance_type']}{'-spot' if spot else ''}"
    if k >= len(rows):
        name += f"#{k // len(rows)}"
    nodes = []
    if rng.random() < 0.3:
        free = rng.randint(0, gpn)
        nodes.append(Node(f"{name}-0", free, free * float(r["vcpus"]) / gpn, free * float(r["memory_gib"]) / gpn,
                          idle=free == gpn))
    return Target(
        f"cloud-{k}", "cloud", r["gpu_type"], gpn, float(r["vcpus"]), float(r["memory_gib"]), price,
        nodes=tuple(nodes), speed=SPEED.get(r["gpu_type"], 1.0), max_new_nodes=rng.choice([4, 8, 16, 32]),
        provisioning_h=rng.choice([0.1, 0.15, 0.25, 0.5]), spot=spot, cloud=r["cloud"], region=r["region"],
        label=name,
    )


def _clouds(rng: random.Random, n: int) -> list[Target]:
    """`n` cloud pools drawn from the catalog's 4- and 8-GPU and 1-GPU machines."""
    rows = [r for r in _catalog() if int(r["gpus"]) in (4, 8)] + [r for r in _catalog() if int(r["gpus"]) == 1]
    rng.shuffle(rows)
    return [_cloud(rng, rows, k) for k in range(n)]


def _job(rng: random.Random, job_id: str) -> JobDemand:
    """A pending job: mostly small, a few 2-node gangs, runtimes from half an hour to 30 hours."""
    gang = rng.random() < 0.03
    g = 8 if gang else rng.choices([1, 2, 4, 8], [0.7, 0.1, 0.15, 0.05])[0]
    types = rng.choices([frozenset(), frozenset({"A100", "A100-80GB", "H100"}), frozenset({"H100"})],
                        [0.6, 0.25, 0.15])[0]
    return JobDemand(
        id=job_id, gpus=g, nodes=2 if gang else 1,
        runtime_h=round(math.exp(rng.uniform(math.log(0.5), math.log(30))), 2),
        value_of_time=rng.choice([0.5, 1.5, 4.0]), cpu=10.0 * g, memory_gib=80.0 * g, gpu_types=types,
        priority=1 if rng.random() < 0.1 else 0, checkpointable=rng.random() < 0.5,
        waited_h=round(rng.uniform(0, 4), 2),
    )


def instance(n_jobs: int, n_targets: int, seed: int = 0) -> PlacementProblem:
    rng = random.Random(seed)
    n_onprem = 2 if n_targets < 6 else 3
    nodes_per_onprem = max(8, n_jobs // 25)
    targets = [_onprem(rng, k, nodes_per_onprem) for k in range(n_onprem)]
    targets += _clouds(rng, n_targets - n_onprem)
    jobs = [_job(rng, f"job-{i:05d}") for i in range(n_jobs)]
    policy = Policy(max_cloud_gpus=max(64, n_jobs // 2), cloud_gpus_in_use=16, idle_h=0.25)
    return PlacementProblem(tuple(jobs), tuple(targets), policy)


def small_instance(rng: random.Random) -> PlacementProblem:
    """A small problem as a replay meets it: a short queue, a few targets, on-prem anywhere from idle to full."""
    n_targets = rng.randint(2, 6)
    n_onprem = 1 if n_targets <= 3 else rng.choice([1, 2])
    load = rng.random()
    targets: list[Target] = []
    for k in range(n_onprem):
        gpu, cpu, mem = ONPREM_SHAPES[k % len(ONPREM_SHAPES)]
        nodes: list[Node] = []
        releases: list[Release] = []
        for n in range(rng.randint(2, 12)):
            name = f"op{k}-n{n:02d}"
            r = rng.random()
            used = 8 if r < load else (rng.choice([2, 4, 6, 7]) if r < load + (1 - load) * 0.3 else 0)
            left = used
            while left > 0:
                g = min(rng.choice([1, 2, 4, 8]), left)
                left -= g
                releases.append(Release(round(math.exp(rng.uniform(math.log(0.1), math.log(24))), 2), name, g,
                                        g * cpu / 8, g * mem / 8))
            free = 8 - used
            nodes.append(Node(name, free, free * cpu / 8, free * mem / 8, idle=used == 0))
        targets.append(Target(f"onprem-{k}", "onprem", gpu, 8, cpu, mem, 0.0, nodes=tuple(nodes), speed=SPEED[gpu],
                              releases=tuple(releases)))
    targets += _clouds(rng, n_targets - n_onprem)
    jobs = [_job(rng, f"job-{i:02d}") for i in range(max(1, round(math.exp(rng.uniform(0, math.log(50))))))]
    policy = Policy(max_cloud_gpus=rng.choice([None, 32, 64, 128]), cloud_gpus_in_use=rng.choice([0, 8, 16]),
                    idle_h=0.25)
    return PlacementProblem(tuple(jobs), tuple(targets), policy)


def _no_bound(policy: Policy) -> Policy:
    """The policy a replay solves with: no LP bound per decision."""
    return replace(policy, compute_bound=False)


def _limits(policy: Policy, time_limit: float, work_limit: float | None) -> Policy:
    """The policy with the benchmark's time limit, or its work limit (the deterministic mode)."""
    return replace(policy, time_limit_s=time_limit, work_limit=work_limit)


def _same(a: Plan, b: Plan) -> bool:
    """Whether two plans decide the same (decisions, nodes, new nodes and objective, exactly)."""
    return (a.decisions, a.new_nodes, a.objective) == (b.decisions, b.new_nodes, b.objective)


def bench_small(n: int, seed: int, with_bound: bool, work_limit: float | None = None) -> None:
    rng = random.Random(seed)
    problems = [small_instance(rng) for _ in range(n)]
    if work_limit is not None:
        problems = [replace(p, policy=replace(p.policy, work_limit=work_limit)) for p in problems]
    times: list[float] = []
    by_status: dict[str, list[float]] = {}
    worse = bad = 0
    ratio: list[float] = []
    for p in problems:
        p = replace(p, policy=p.policy if with_bound else _no_bound(p.policy))
        t = time.perf_counter()
        plan = solve(p)
        took = time.perf_counter() - t
        times.append(took)
        by_status.setdefault(f"{plan.solver} {plan.status}", []).append(took)
        greedy = solve_greedy(p)
        if plan.objective > greedy.objective + 1e-6:
            worse += 1
        if greedy.objective > 0:
            ratio.append(plan.objective / greedy.objective)
        if check_plan(p, plan):
            bad += 1
    times.sort()
    print(f"{n} small problems (seed {seed}): 1-50 pending jobs, 2-6 targets; LP bound "
          f"{'computed' if with_bound else 'skipped'}"
          + (f"; deterministic, work limit {work_limit:g}" if work_limit is not None else ""))
    print(f"mean solve   {1000 * statistics.fmean(times):.2f} ms (median {1000 * times[len(times) // 2]:.2f} ms, "
          f"p95 {1000 * times[int(0.95 * len(times))]:.2f} ms, total {sum(times):.1f} s)")
    for status, ts in sorted(by_status.items(), key=lambda kv: -len(kv[1])):
        print(f"  {status:<22} {len(ts):>5} solves, mean {1000 * statistics.fmean(ts):.2f} ms")
    print(f"objective    {100 * (1 - statistics.fmean(ratio)):.2f}% below greedy on average; "
          f"worse than greedy: {worse}; check_plan violations: {bad}")


def _plan_record(plan: Plan) -> dict:
    """What a replay acts on (decisions with their nodes and start times, new nodes, objective), plus what it
    only logs (reasons and costs, solver and status), in a form JSON keeps exactly (floats round-trip)."""
    return {
        "decisions": [[d.job_id, d.action.value, d.target, list(d.nodes), d.start_h, d.wait_target]
                      for d in plan.decisions],
        "new_nodes": dict(sorted(plan.new_nodes.items())),
        "objective": plan.objective,
        "reasons": [[d.reason, d.cost] for d in plan.decisions],
        "tag": [plan.solver, plan.status],
    }


def _decides_alike(a: dict, b: dict) -> bool:
    return (a["decisions"], a["new_nodes"], a["objective"]) == (b["decisions"], b["new_nodes"], b["objective"])


def bench_replay(path: str, reference: str | None, work_limit: float) -> None:
    with open(path, "rb") as f:
        problems: list[PlacementProblem] = pickle.load(f)
    modes: list[tuple[str, float | None]] = [("time limit", None), (f"work limit {work_limit:g}", work_limit)]
    records: dict[str, list[dict]] = {}
    print(f"{len(problems)} problems from {path}; LP bound skipped, as replays solve")
    for name, limit in modes:
        cpu: list[float] = []
        wall = 0.0
        by_status: dict[str, list[float]] = {}
        out: list[dict] = []
        for p in problems:
            p = replace(p, policy=replace(_no_bound(p.policy), work_limit=limit))
            t, c = time.perf_counter(), time.process_time()
            plan = solve(p)
            took = time.process_time() - c
            wall += time.perf_counter() - t
            cpu.append(took)
            by_status.setdefault(f"{plan.solver} {plan.status}", []).append(took)
            out.append(_plan_record(plan))
        records[str(limit)] = out
        cpu.sort()
        print(f"{name:<14} CPU per solve: mean {1000 * statistics.fmean(cpu):.3f} ms, median "
              f"{1000 * cpu[len(cpu) // 2]:.3f} ms, p90 {1000 * cpu[int(0.9 * len(cpu))]:.3f} ms, "
              f"max {1000 * cpu[-1]:.1f} ms; total {sum(cpu):.2f} s CPU, {wall:.2f} s wall")
        for status, ts in sorted(by_status.items(), key=lambda kv: -len(kv[1])):
            print(f"  {status:<22} {len(ts):>5} solves, mean {1000 * statistics.fmean(ts):.3f} ms")
    if reference is None:
        return
    ref_path = Path(reference)
    if not ref_path.exists():
        ref_path.write_text(json.dumps({"problems": path, "plans": records}))
        print(f"plans stored in {reference} as the reference")
        return
    ref = json.loads(ref_path.read_text())["plans"]
    for name, limit in modes:
        mine, theirs = records[str(limit)], ref.get(str(limit))
        if theirs is None or len(theirs) != len(mine):
            print(f"{name:<14} the reference has no plans for this mode and file")
            continue
        differ = [k for k, (a, b) in enumerate(zip(mine, theirs)) if not _decides_alike(a, b)]
        alike = [(a, b) for a, b in zip(mine, theirs) if _decides_alike(a, b)]
        reasons = sum(1 for a, b in alike if a["reasons"] != b["reasons"])
        tags = sum(1 for a, b in alike if a["tag"] != b["tag"])
        print(f"{name:<14} plans that differ from {reference}: {len(differ)} of {len(mine)}"
              + (f" (first: problem {differ[0]})" if differ else "")
              + f"; deciding alike, {reasons} with other reasons or costs, {tags} with another solver or status")


def bench_sizes(sizes: list[int], n_targets: int, seed: int, runs: int, time_limit: float, with_bound: bool,
                work_limit: float | None = None) -> None:
    if work_limit is not None:
        print(f"deterministic mode: work limit {work_limit:g} (the time limit is not read)")
    print(f"{'jobs':>6} x {'tgts':<4} {'seed':>4}  {'greedy':>18}  {'decision':>22}  {'vs greedy':>9}  "
          f"{'status':<14} {'LP bound':>18}  {'gap':>6}  check" + ("  solve with bound" if with_bound else "")
          + ("  repeats" if work_limit is not None else ""))
    for n in sizes:
        for r in range(runs):
            s = seed + r
            problem = instance(n, n_targets, s)
            policy = _no_bound(_limits(problem.policy, time_limit, work_limit))
            problem = replace(problem, policy=policy)
            t = time.perf_counter()
            greedy = solve_greedy(problem)
            greedy_s = time.perf_counter() - t
            t = time.perf_counter()
            plan = solve(problem)
            plan_s = time.perf_counter() - t
            t = time.perf_counter()
            bound = lp_bound(problem, plan_wait_costs(problem, plan), time_limit_s=120)
            lp_s = time.perf_counter() - t
            gap = f"{100 * (plan.objective - bound) / plan.objective:.2f}%" if bound is not None else "-"
            below = 100 * (greedy.objective - plan.objective) / max(greedy.objective, 1e-9)
            bad = check_plan(problem, plan)
            line = (f"{n:>6} x {n_targets:<4} {s:>4}  ${greedy.objective:>9,.0f} {greedy_s:>5.2f} s  "
                    f"${plan.objective:>9,.0f} in {plan_s:>5.2f} s  {below:>8.1f}%  {plan.status:<14} "
                    f"${bound or 0:>9,.0f} {lp_s:>5.2f} s  {gap:>6}  {'ok' if not bad else len(bad)}")
            if with_bound:
                # what the scheduler's loop pays when it logs the gap every cycle
                t = time.perf_counter()
                bounded = solve(replace(problem, policy=replace(policy, compute_bound=True)))
                took = time.perf_counter() - t
                line += f"  {took:5.2f} s, gap " + ("-" if bounded.gap is None else f"{100 * bounded.gap:.2f}%")
            if work_limit is not None:
                line += "  " + ("same plan" if _same(plan, solve(problem)) else "DIFFERENT PLAN")
            print(line)


def bench_detail(n_jobs: int, n_targets: int, seed: int, time_limit: float, work_limit: float | None = None) -> None:
    problem = instance(n_jobs, n_targets, seed)
    problem = replace(problem, policy=_limits(problem.policy, time_limit, work_limit))

    t = time.perf_counter()
    greedy = solve_greedy(problem)
    greedy_s = time.perf_counter() - t
    t = time.perf_counter()
    settled, rounds = cpsat_settled(problem)
    cp_s = time.perf_counter() - t
    plan = settled.plan
    t = time.perf_counter()
    bound = lp_bound(problem, settled.wait_costs, time_limit_s=60)
    lp_s = time.perf_counter() - t
    bad = check_plan(problem, plan) + check_plan(problem, greedy)

    def gap(obj: float, lb: float | None) -> str:
        return f"{100 * (obj - lb) / obj:.2f}%" if lb is not None and obj > 0 else "-"

    acts = {a: sum(1 for d in plan.decisions if d.action.value == a) for a in ("start", "burst", "wait")}
    below = 100 * (greedy.objective - plan.objective) / max(greedy.objective, 1e-9)
    rows = [
        ("jobs x targets", f"{n_jobs} x {n_targets} (seed {seed})"),
        ("greedy", f"${greedy.objective:,.0f} in {greedy_s:.2f} s"),
        ("cp-sat", f"${plan.objective:,.0f} in {cp_s:.2f} s ("
                   + (f"limit {time_limit:g} s" if work_limit is None else f"work limit {work_limit:g}")
                   + f"), {below:.1f}% below greedy"),
        ("status", f"{plan.status} (plan from {plan.solver})"),
        ("decisions", f"start {acts['start']}, burst {acts['burst']}, wait {acts['wait']}; "
                      f"{sum(plan.new_nodes.values())} new nodes"),
    ]
    for k, r in enumerate(rounds, 1):
        if r.status != "lp-rounded":
            solved = f"model ${r.model_objective:,.0f} (own gap {gap(r.model_objective, r.model_bound)})"
        elif math.isfinite(r.model_objective):
            solved = f"LP ${r.model_objective:,.0f}"
        else:
            solved = "rough LP (a sample's duals)"
        rows.append((f"  round {k}", f"{r.status} in {r.seconds:.2f} s: {solved}, "
                                     f"re-priced plan ${r.plan_objective:,.0f}"))
    rows += [
        ("LP bound", f"${bound:,.0f} in {lp_s:.2f} s (waiting priced by the plan's forecast)"
         if bound is not None else f"none in {lp_s:.2f} s"),
        ("gap to bound", gap(plan.objective, bound)),
        ("check_plan", "ok" if not bad else f"{len(bad)} violations: {bad[:3]}"),
    ]
    w = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{w}}  {v}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", default="1000", help="pending jobs; several sizes separated by commas")
    ap.add_argument("--targets", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runs", type=int, default=1, help="instances per size (seeds seed, seed+1, ...)")
    ap.add_argument("--time-limit", type=float, default=2.0)
    ap.add_argument("--work-limit", type=float, default=None, metavar="X",
                    help="solve in the deterministic mode with this work limit (Policy.work_limit) instead")
    ap.add_argument("--small", type=int, default=0, metavar="N", help="solve N small random problems instead")
    ap.add_argument("--detail", action="store_true", help="one size: every round of the search")
    ap.add_argument("--with-bound", action="store_true",
                    help="also time `solve` with the LP bound on (Policy.compute_bound), as the loop logs it; "
                         "with --small, solve with it on")
    ap.add_argument("--replay-problems", metavar="PATH",
                    help="solve every problem of this pickled list[PlacementProblem] in both modes instead")
    ap.add_argument("--reference", metavar="FILE",
                    help="with --replay-problems: compare the plans with this JSON file (written if missing)")
    args = ap.parse_args(argv)
    if args.replay_problems:
        bench_replay(args.replay_problems, args.reference, 2.0 if args.work_limit is None else args.work_limit)
        return
    if args.small:
        bench_small(args.small, args.seed, args.with_bound, args.work_limit)
        return
    sizes = [int(x) for x in args.jobs.split(",") if x.strip()]
    if args.detail:
        for n in sizes:
            bench_detail(n, args.targets, args.seed, args.time_limit, args.work_limit)
        return
    bench_sizes(sizes, args.targets, args.seed, args.runs, args.time_limit, args.with_bound, args.work_limit)


if __name__ == "__main__":
    main()
