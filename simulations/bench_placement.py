"""Placement benchmark: a realistic queue against busy on-prem clusters and cloud pools; greedy vs CP-SAT vs LP.

    python -m simulations.bench_placement --jobs 1000 --targets 10 [--seed 0] [--time-limit 2]

The instance: 2-3 on-prem clusters of 8-GPU nodes, mostly busy, whose running jobs end over the next hours;
the other targets are cloud pools drawn from the bundled price catalog (several GPU types, on-demand and
spot); jobs of 1/2/4/8 GPUs (p = .7/.1/.15/.05) plus a few 2 x 8 gangs, runtimes log-uniform in 0.5-30 h.
It prints figures; it does not pass or fail.
"""

from __future__ import annotations

import argparse
import csv
import math
import random
import time
from dataclasses import replace
from pathlib import Path

from placement import (
    JobDemand,
    Node,
    PlacementProblem,
    Policy,
    Release,
    Target,
    check_plan,
    lp_bound,
    solve_greedy,
)
from placement.cpsat import cpsat_settled

CATALOG = Path(__file__).resolve().parent.parent / "config" / "gpu_instances.csv"
SPEED = {"H100": 2.0, "A100": 1.0, "A100-80GB": 1.1, "V100": 0.5, "V100-32GB": 0.55, "A10G": 0.45, "L4": 0.4,
         "T4": 0.25}
ONPREM_SHAPES = [("A100", 96, 1024), ("H100", 192, 2048), ("A100", 128, 1024)]


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


def instance(n_jobs: int, n_targets: int, seed: int = 0) -> PlacementProblem:
    rng = random.Random(seed)
    n_onprem = 2 if n_targets < 6 else 3
    nodes_per_onprem = max(8, n_jobs // 25)
    targets = [_onprem(rng, k, nodes_per_onprem) for k in range(n_onprem)]
    rows = [r for r in _catalog() if int(r["gpus"]) in (4, 8)] + [r for r in _catalog() if int(r["gpus"]) == 1]
    rng.shuffle(rows)
    targets += [_cloud(rng, rows, k) for k in range(n_targets - n_onprem)]
    jobs = []
    for i in range(n_jobs):
        gang = rng.random() < 0.03
        g = 8 if gang else rng.choices([1, 2, 4, 8], [0.7, 0.1, 0.15, 0.05])[0]
        types = rng.choices([frozenset(), frozenset({"A100", "A100-80GB", "H100"}), frozenset({"H100"})],
                            [0.6, 0.25, 0.15])[0]
        jobs.append(JobDemand(
            id=f"job-{i:05d}", gpus=g, nodes=2 if gang else 1,
            runtime_h=round(math.exp(rng.uniform(math.log(0.5), math.log(30))), 2),
            value_of_time=rng.choice([0.5, 1.5, 4.0]), cpu=10.0 * g, memory_gib=80.0 * g, gpu_types=types,
            priority=1 if rng.random() < 0.1 else 0, checkpointable=rng.random() < 0.5,
            waited_h=round(rng.uniform(0, 4), 2),
        ))
    policy = Policy(max_cloud_gpus=max(64, n_jobs // 2), cloud_gpus_in_use=16, idle_h=0.25)
    return PlacementProblem(tuple(jobs), tuple(targets), policy)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--targets", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--time-limit", type=float, default=2.0)
    args = ap.parse_args(argv)
    problem = instance(args.jobs, args.targets, args.seed)
    problem = replace(problem, policy=replace(problem.policy, time_limit_s=args.time_limit))

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
        ("jobs x targets", f"{args.jobs} x {args.targets} (seed {args.seed})"),
        ("greedy", f"${greedy.objective:,.0f} in {greedy_s:.2f} s"),
        ("cp-sat", f"${plan.objective:,.0f} in {cp_s:.2f} s (limit {args.time_limit:g} s), "
                   f"{below:.1f}% below greedy"),
        ("status", f"{plan.status} (plan from {plan.solver})"),
        ("decisions", f"start {acts['start']}, burst {acts['burst']}, wait {acts['wait']}; "
                      f"{sum(plan.new_nodes.values())} new nodes"),
    ]
    for k, r in enumerate(rounds, 1):
        solved = (f"LP ${r.model_objective:,.0f}" if r.status == "lp-rounded" else
                  f"model ${r.model_objective:,.0f} (own gap {gap(r.model_objective, r.model_bound)})")
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


if __name__ == "__main__":
    main()
