"""Short queues as a replay meets them (one busy on-prem cluster with its release forecast, a few cloud pools,
1-6 jobs): every shortcut `solve` takes on them returns exactly the plan of the full search."""

from __future__ import annotations

import importlib
import itertools
import math
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings

import spillover.placement.assemble as assemble
import spillover.placement.cpsat as cpsat
from spillover.placement import JobDemand, Node, PlacementProblem, Plan, Policy, Release, Target, check_plan, solve
from spillover.placement.assemble import priced, runs_now
from spillover.placement.certify import proven_optimal
from spillover.placement.cpsat import cpsat_settled
from spillover.placement.greedy import greedy_settled
from spillover.placement.ledger import Ledger
from spillover.placement.sole import sole_optimum
from test_placement_fastpaths import problems

N_PROBLEMS = 500
# the module, not the function of the same name that the package exports
solve_module = importlib.import_module("spillover.placement.solve")


def onprem(rng: random.Random) -> Target:
    """8 nodes of 8 A100s, nearly full of mostly 1-GPU jobs whose ends the forecast knows (hours to days away)."""
    nodes = []
    releases = []
    for k in range(8):
        name = f"onprem-n{k:03d}"
        free = rng.choices([0, 1, 2, 4, 8], [0.6, 0.2, 0.1, 0.06, 0.04])[0]
        left, running = 8 - free, 0
        while left > 0:
            g = min(left, rng.choices([1, 2, 4, 8], [0.7, 0.1, 0.15, 0.05])[0])
            left -= g
            running += 1
            # a few running jobs have no expected end: their GPUs do not come back within the forecast
            if rng.random() < 0.97:
                releases.append(Release(round(math.exp(rng.uniform(math.log(0.3), math.log(120))), 4), name, g,
                                        1.0, 4.0))
        nodes.append(Node(name, free, 96.0 - running, 1024.0 - 4.0 * running, idle=free == 8))
    return Target("onprem", "onprem", "A100", 8, 96.0, 1024.0, 0.0, nodes=tuple(nodes), releases=tuple(releases))


def pool(rng: random.Random, gpn: int, provisioning: float) -> Target:
    """A pool of A100 machines at $3 per GPU-hour, practically unlimited, with a few busy nodes up already."""
    nodes = []
    for k in range(rng.choice([0, 0, 1, 2, 3])):
        free = 0 if rng.random() < 0.9 else rng.randint(1, gpn)
        nodes.append(Node(f"cloud/gpu{gpn}/{k}", free, 12.0 * free, 128.0 * free, idle=free == gpn))
    return Target(f"cloud/gpu{gpn}", "cloud", "A100", gpn, 12.0 * gpn, 128.0 * gpn, 3.0 * gpn, nodes=tuple(nodes),
                  max_new_nodes=100_000, provisioning_h=provisioning, label=f"sim.gpu{gpn}")


def replay_like(rng: random.Random) -> PlacementProblem:
    # mostly as the replays run (no boot time, no idle time, no cap), sometimes with each of them
    provisioning = rng.choice([0.0, 0.0, 0.0, 0.0, 0.1])
    targets = (onprem(rng),) + tuple(pool(rng, g, provisioning) for g in (1, 2, 4, 8))
    jobs = []
    for i in range(rng.choices([1, 2, 3, 4, 5, 6], [0.2, 0.27, 0.22, 0.14, 0.1, 0.07])[0]):
        gang = rng.random() < 0.03
        jobs.append(JobDemand(
            id=f"j{i:03d}", gpus=8 if gang else rng.choices([1, 2, 4, 8], [0.23, 0.09, 0.33, 0.35])[0],
            runtime_h=math.exp(rng.uniform(math.log(2), math.log(160))),
            value_of_time=rng.choices([4.0, 8.0, 16.0, 32.0], [0.77, 0.13, 0.02, 0.08])[0], nodes=2 if gang else 1,
            cpu=1.0, memory_gib=4.0, priority=1 if rng.random() < 0.03 else 0,
            waited_h=rng.choice([0.0, round(math.exp(rng.uniform(math.log(0.05), math.log(100))), 4)]),
        ))
    policy = Policy(max_cloud_gpus=rng.choice([None] * 9 + [24]), cloud_gpus_in_use=rng.choice([0, 2, 8]),
                    idle_h=rng.choice([0.0] * 9 + [0.25]), compute_bound=False)
    return PlacementProblem(tuple(jobs), targets, policy)


def replay_like_problems() -> list[PlacementProblem]:
    rng = random.Random(20240611)
    return [replay_like(rng) for _ in range(N_PROBLEMS)]


@contextmanager
def full_search() -> Iterator[None]:
    """`solve` without the enumeration's shortcut: the search runs whenever greedy's bound is not met."""
    saved = solve_module.SOLE_OPTIMUM
    solve_module.SOLE_OPTIMUM = False
    try:
        yield
    finally:
        solve_module.SOLE_OPTIMUM = saved


@contextmanager
def nothing_kept() -> Iterator[None]:
    """The search without what it keeps within a solve: every round's solution is bound and re-priced, every
    plan's forecast computed afresh."""
    saved = cpsat.REUSE_BOUND, assemble.PRICED_MEMO
    cpsat.REUSE_BOUND, assemble.PRICED_MEMO = False, False
    try:
        yield
    finally:
        cpsat.REUSE_BOUND, assemble.PRICED_MEMO = saved


def fingerprint(plan: Plan) -> tuple:
    """Everything a plan says but its solve time."""
    return decided(plan), plan.solver, plan.status, plan.lower_bound


def decided(plan: Plan) -> tuple:
    """What a plan decides: decisions with their nodes and start times, new nodes, objective."""
    return (tuple((d.job_id, d.action, d.target, d.nodes, d.start_h, d.wait_target, d.reason, d.cost)
                  for d in plan.decisions), sorted(plan.new_nodes.items()), plan.objective)


@pytest.fixture(scope="module")
def small() -> list[PlacementProblem]:
    return replay_like_problems()


@pytest.mark.parametrize("work_limit", [None, 2.0])
def test_solve_decides_as_the_full_search_on_short_queues(small: list[PlacementProblem],
                                                          work_limit: float | None) -> None:
    shortcuts = 0
    for p in small:
        p = replace(p, policy=replace(p.policy, work_limit=work_limit))
        fast = solve(p)
        with full_search():
            full = solve(p)
        assert decided(fast) == decided(full), p
        assert check_plan(p, fast) == []
        if fast.status == "optimal" and fast.solver == "greedy" and full.solver != "greedy":
            shortcuts += 1
    # the shortcut must have been taken, or this test shows nothing
    assert shortcuts >= 25


@pytest.mark.parametrize("work_limit", [None, 2.0])
def test_what_the_search_keeps_within_a_solve_changes_no_plan(small: list[PlacementProblem],
                                                               work_limit: float | None) -> None:
    reused = 0
    for p in small[:250]:
        p = replace(p, policy=replace(p.policy, work_limit=work_limit))
        with full_search():
            kept = solve(p)
            with nothing_kept():
                fresh = solve(replace(p))  # another problem object: nothing kept from the solve above
        assert fingerprint(kept) == fingerprint(fresh), p
        reused += kept.solver == "cp-sat"
    assert reused >= 30  # the search ran, and with it what it keeps


def test_a_sole_optimum_is_the_plan_every_search_returns(small: list[PlacementProblem]) -> None:
    proven = 0
    for p in small:
        greedy = greedy_settled(p)
        if not sole_optimum(p, greedy):
            continue
        proven += 1
        found, _ = cpsat_settled(p, greedy)
        assert decided(found.plan) == decided(greedy.plan)
    assert proven >= 25


def test_a_proof_is_attempted_only_where_the_enumeration_is_exact(small: list[PlacementProblem]) -> None:
    for p in small:
        greedy = greedy_settled(p)
        bursts = any(p.targets[ti].kind == "cloud" for ti, _ in greedy.ledger.binding.values())
        if any(j.nodes > 1 for j in p.jobs) or bursts:
            assert not sole_optimum(p, greedy)


def two_jobs_one_hole() -> PlacementProblem:
    """Two jobs alike in size and value of time, one node with room for one of them now and another that frees
    up later: either may start, the other waits for the same release at the same cost."""
    nodes = (Node("n0", 2, 90.0, 1000.0), Node("n1", 0, 90.0, 1000.0))
    releases = (Release(1.5, "n1", 2, 1.0, 4.0), Release(30.0, "n0", 6, 1.0, 4.0), Release(40.0, "n1", 6, 1.0, 4.0))
    op = Target("onprem", "onprem", "A100", 8, 96.0, 1024.0, 0.0, nodes=nodes, releases=releases)
    cloud = Target("cloud/gpu2", "cloud", "A100", 2, 24.0, 256.0, 6.0, max_new_nodes=100_000)
    jobs = (JobDemand("a", 2, 100.0, 16.0, cpu=1.0, memory_gib=4.0),
            JobDemand("b", 2, 10.0, 16.0, cpu=1.0, memory_gib=4.0))
    return PlacementProblem(jobs, (op, cloud), Policy(compute_bound=False))


def test_a_tie_between_two_plans_is_left_to_the_search() -> None:
    p = two_jobs_one_hole()
    greedy = greedy_settled(p)
    plan = greedy.plan
    assert [d.action.value for d in plan.decisions] == ["start", "wait"]
    assert proven_optimal(p, greedy.objective) is None
    # the other plan: b starts, a waits for the same release; it costs exactly as much
    swapped = 16.0 * 2 * 1.5
    assert plan.objective == pytest.approx(swapped)
    assert not sole_optimum(p, greedy)


def test_one_job_that_must_wait_is_settled_by_the_enumeration() -> None:
    """A full cluster whose first release comes soon, and a cloud run that costs more than waiting for it."""
    nodes = tuple(Node(f"n{k}", 0, 90.0, 1000.0) for k in range(2))
    releases = (Release(0.5, "n0", 8, 1.0, 4.0), Release(2.0, "n1", 8, 1.0, 4.0))
    op = Target("onprem", "onprem", "A100", 8, 96.0, 1024.0, 0.0, nodes=nodes, releases=releases)
    cloud = Target("cloud/gpu8", "cloud", "A100", 8, 96.0, 1024.0, 24.0, max_new_nodes=100_000)
    jobs = (JobDemand("x", 8, 10.0, 4.0, cpu=1.0, memory_gib=4.0), JobDemand("y", 8, 10.0, 4.0, cpu=1.0,
                                                                            memory_gib=4.0, waited_h=1.0))
    p = PlacementProblem(jobs, (op, cloud), Policy(compute_bound=False))
    greedy = greedy_settled(p)
    assert [d.action.value for d in greedy.plan.decisions] == ["wait", "wait"]
    assert proven_optimal(p, greedy.objective) is None  # y waits behind x: more than alone
    assert sole_optimum(p, greedy)
    plan = solve(p)
    assert (plan.solver, plan.status) == ("greedy", "optimal")
    with full_search():
        assert decided(solve(p)) == decided(plan)


def every_plan(p: PlacementProblem) -> Iterator[tuple[tuple, float, bool]]:
    """Every valid plan of a tiny problem: (what it binds where, new nodes numbered in job order; its consistent
    objective; whether it keeps the WAIT rule, as every plan the search returns does)."""
    n = len(p.jobs)
    per_job: list[list[tuple[int, tuple[str, ...]] | None]] = []
    for job in p.jobs:
        opts: list[tuple[int, tuple[str, ...]] | None] = [None]
        for ti, t in enumerate(p.targets):
            names = [nd.name for nd in t.nodes]
            if t.kind == "cloud":
                names += [f"{t.id}/new-{k}" for k in range(n * job.nodes)]
            opts += [(ti, combo) for combo in itertools.combinations(names, job.nodes)]
        per_job.append(opts)
    for choice in itertools.product(*per_job):
        ledger = Ledger(p)
        if not all(c is None or (ledger.can_place(i, *c) and ledger.place(i, *c) is None)
                   for i, c in enumerate(choice)):
            continue
        _, waits, total = priced(p, ledger)
        keeps_rule = True
        for i in range(n):
            if i not in ledger.binding:
                opt = ledger.best_option(i)
                keeps_rule = keeps_rule and (opt is None or not runs_now(opt.cost, waits[i]))
        yield _bound(p, ledger), total, keeps_rule


def _bound(p: PlacementProblem, ledger: Ledger) -> tuple:
    rename: dict[tuple[int, str], str] = {}
    out: list[tuple | None] = []
    for i in range(len(p.jobs)):
        b = ledger.binding.get(i)
        if b is None:
            out.append(None)
            continue
        ti, names = b
        for name in names:
            if ledger.slots[(ti, name)].new and (ti, name) not in rename:
                rename[(ti, name)] = f"new-{sum(1 for k in rename if k[0] == ti)}"
        out.append((ti, tuple(rename.get((ti, name), name) for name in names)))
    return tuple(out)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
@given(problems(max_jobs=3))
def test_every_other_plan_costs_more_than_a_sole_optimum(p: PlacementProblem) -> None:
    """Checked against every valid plan of tiny problems (any targets, gangs, caps, boot times)."""
    greedy = greedy_settled(p)
    if not sole_optimum(p, greedy):
        return
    mine = _bound(p, greedy.ledger)
    for bound, total, keeps_rule in every_plan(p):
        if bound != mine and keeps_rule:
            assert total > greedy.objective + 1e-9, bound
