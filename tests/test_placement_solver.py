"""The solver pipeline's guarantees: greedy as the floor and the fallback, the LP path for huge queues."""

from __future__ import annotations

from dataclasses import replace

import pytest

import spillover.placement.cpsat as cpsat
from spillover.placement import (
    JobDemand,
    Node,
    PlacementProblem,
    Policy,
    Release,
    Target,
    check_plan,
    lp_bound,
    solve,
    solve_cpsat,
    solve_greedy,
)


def queue(n: int) -> PlacementProblem:
    """A busy cluster, two pools and a queue with a spread of sizes, runtimes and values of time."""
    nodes = tuple(Node(f"a-{k}", k % 3 * 2, 32.0 * (k % 3), 256.0 * (k % 3)) for k in range(6))
    releases = tuple(Release(0.5 + k, f"a-{k}", 8 - k % 3 * 2, 96 - 32.0 * (k % 3), 1024 - 256.0 * (k % 3))
                     for k in range(6))
    onprem = Target("onprem-a", "onprem", "A100", 8, 96, 1024, 0.0, nodes=nodes, releases=releases)
    p4d = Target("p4d", "cloud", "A100", 8, 96, 1152, 22.0, max_new_nodes=6, provisioning_h=0.2)
    spot = Target("p4d-spot", "cloud", "A100", 8, 96, 1152, 8.0, max_new_nodes=3, provisioning_h=0.2, spot=True)
    jobs = tuple(
        JobDemand(f"j{i}", [1, 2, 4, 8][i % 4], 1.0 + (i * 7) % 13, [0.5, 2.0, 6.0][i % 3],
                  nodes=2 if i % 11 == 5 else 1, cpu=4.0 * [1, 2, 4, 8][i % 4], checkpointable=i % 2 == 0)
        for i in range(n)
    )
    return PlacementProblem(jobs, (onprem, p4d, spot), Policy(max_cloud_gpus=48, idle_h=0.25, time_limit_s=1.0))


def test_without_a_cpsat_solution_the_greedy_plan_is_returned(monkeypatch: pytest.MonkeyPatch) -> None:
    p = queue(30)
    monkeypatch.setattr(cpsat, "solve_round", lambda *a, **k: None)
    monkeypatch.setattr(cpsat, "lp_rounded", lambda *a, **k: None)
    plan = solve_cpsat(p)
    greedy = solve_greedy(p)
    assert (plan.solver, plan.status) == ("greedy", "greedy-fallback")
    assert plan.decisions == greedy.decisions
    assert check_plan(p, plan) == []


def test_huge_queues_take_the_lp_path_and_stay_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    p = queue(60)
    monkeypatch.setattr(cpsat, "CPSAT_MAX_PAIRS", 0)
    monkeypatch.setattr(cpsat, "solve_round", lambda *a, **k: pytest.fail("CP-SAT ran on a huge queue"))
    plan = solve_cpsat(p)
    assert check_plan(p, plan) == []
    assert plan.objective <= solve_greedy(p).objective + 1e-6


def test_the_joint_plan_is_cheaper_than_greedy_on_a_busy_queue() -> None:
    p = queue(40)
    greedy = solve_greedy(p)
    plan = solve(p)
    assert check_plan(p, plan) == []
    assert plan.objective < greedy.objective
    assert plan.lower_bound is not None and plan.lower_bound <= plan.objective
    assert lp_bound(p) <= plan.objective


def test_a_tighter_time_limit_still_gives_a_valid_plan() -> None:
    p = queue(80)
    p = replace(p, policy=replace(p.policy, time_limit_s=0.05))
    plan = solve_cpsat(p)
    assert check_plan(p, plan) == []
    assert plan.objective <= solve_greedy(p).objective + 1e-6
