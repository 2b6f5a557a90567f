"""The solver's shortcuts decide exactly as the full search would: a plan proven optimal costs what the search
finds, every plan is valid and never worse than greedy's, and skipping the LP bound changes no decision."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spillover.placement import (
    Action,
    JobDemand,
    Node,
    PlacementProblem,
    Policy,
    Release,
    Target,
    check_plan,
    lp_bound,
    solve,
    solve_greedy,
)
from spillover.placement.certify import plan_lower_bound
from spillover.placement.cpsat import cpsat_settled

GPU_TYPES = ["A100", "H100"]
TOL = 1e-6


@st.composite
def targets(draw: st.DrawFn, k: int, load: float) -> Target:
    """A cluster or pool whose nodes are busy with probability `load`."""
    kind = draw(st.sampled_from(["onprem", "cloud"]))
    gpn = draw(st.sampled_from([1, 4, 8]))
    cpu, mem = 8.0 * gpn, 64.0 * gpn
    nodes = []
    releases = []
    for n in range(draw(st.integers(0, 4))):
        name = f"n{n}"
        busy = draw(st.floats(0.0, 1.0)) < load
        free = draw(st.integers(0, gpn)) if busy else gpn
        ready = draw(st.sampled_from([0.0, 0.0, 0.3])) if kind == "cloud" else 0.0
        nodes.append(Node(name, free, cpu * free / gpn, mem * free / gpn, ready_in_h=ready, idle=free == gpn))
        if kind == "onprem" and free < gpn:
            releases.append(Release(draw(st.floats(0.1, 12.0)), name, gpn - free, cpu * (gpn - free) / gpn,
                                    mem * (gpn - free) / gpn))
    return Target(
        id=f"t{k}",
        kind=kind,
        gpu_type=draw(st.sampled_from(GPU_TYPES)),
        gpus_per_node=gpn,
        cpu_per_node=cpu,
        memory_gib_per_node=mem,
        price_per_node_h=draw(st.sampled_from([0.0, 0.0, 2.0])) if kind == "onprem" else draw(st.floats(1.0, 40.0)),
        nodes=tuple(nodes),
        speed=draw(st.sampled_from([1.0, 2.0])),
        max_new_nodes=draw(st.integers(0, 4)) if kind == "cloud" else 0,
        provisioning_h=draw(st.sampled_from([0.0, 0.0, 0.2, 0.5])),
        releases=tuple(releases),
        spot=kind == "cloud" and draw(st.booleans()),
    )


@st.composite
def problems(draw: st.DrawFn, max_jobs: int = 6) -> PlacementProblem:
    load = draw(st.sampled_from([0.0, 0.0, 0.3, 0.7, 1.0]))
    ts = tuple(draw(targets(k, load)) for k in range(draw(st.integers(1, 5))))
    jobs = []
    for i in range(draw(st.integers(1, max_jobs))):
        gpus = draw(st.sampled_from([0, 1, 1, 2, 4, 8]))
        jobs.append(JobDemand(
            id=f"j{i}",
            gpus=gpus,
            runtime_h=draw(st.floats(0.5, 20.0)),
            value_of_time=draw(st.sampled_from([0.0, 0.5, 2.0, 10.0])),
            nodes=draw(st.sampled_from([1, 1, 1, 2])),
            cpu=draw(st.sampled_from([0.0, 4.0, 8.0 * max(1, gpus)])),
            memory_gib=draw(st.sampled_from([0.0, 32.0])),
            gpu_types=draw(st.sampled_from([frozenset(), frozenset(), frozenset({"A100"})])),
            priority=draw(st.integers(0, 1)),
            checkpointable=draw(st.booleans()),
            waited_h=draw(st.sampled_from([0.0, 1.0])),
        ))
    policy = Policy(
        max_cloud_gpus=draw(st.sampled_from([None, None, 8, 32])),
        cloud_gpus_in_use=draw(st.sampled_from([0, 4])),
        idle_h=draw(st.sampled_from([0.0, 0.0, 0.25])),
        max_wait_h=48.0,
        spot_for_non_checkpointable=draw(st.booleans()),
        time_limit_s=0.5,
    )
    return PlacementProblem(tuple(jobs), ts, policy)


SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def full_search(p: PlacementProblem) -> float:
    """The objective of the search without any shortcut: greedy, the LP rounding and every CP-SAT round."""
    return cpsat_settled(p)[0].plan.objective


@SETTINGS
@given(problems())
def test_a_plan_proven_optimal_costs_what_the_full_search_finds(p: PlacementProblem) -> None:
    plan = solve(p)
    assert check_plan(p, plan) == []
    full = full_search(p)
    assert plan.objective <= full + TOL * max(1.0, full)
    if plan.solver == "greedy" and plan.status == "optimal":
        assert abs(plan.objective - full) <= TOL * max(1.0, full)
        assert plan.lower_bound == plan.objective


@SETTINGS
@given(problems())
def test_the_shortcut_bound_is_below_every_plan(p: PlacementProblem) -> None:
    bound = plan_lower_bound(p)
    for objective in (solve_greedy(p).objective, full_search(p), solve(p).objective):
        assert bound <= objective + TOL * max(1.0, objective)


@SETTINGS
@given(problems(max_jobs=1))
def test_one_job_is_decided_as_the_full_search_decides_it(p: PlacementProblem) -> None:
    plan = solve(p)
    settled, _ = cpsat_settled(p)
    assert check_plan(p, plan) == []
    assert abs(plan.objective - settled.plan.objective) <= TOL * max(1.0, plan.objective)
    assert plan.decisions[0].action is settled.plan.decisions[0].action


@SETTINGS
@given(problems(max_jobs=12))
def test_solve_is_valid_and_never_worse_than_greedy(p: PlacementProblem) -> None:
    plan = solve(p)
    assert check_plan(p, plan) == []
    assert plan.objective <= solve_greedy(p).objective + TOL
    assert len(plan.decisions) == len(p.jobs)
    for job, d in zip(p.jobs, plan.decisions):
        if d.action is Action.WAIT:
            assert d.nodes == () and d.target is None
        else:
            assert len(d.nodes) == job.nodes and d.reason


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems(max_jobs=12))
def test_skipping_the_bound_changes_nothing_but_the_bound(p: PlacementProblem) -> None:
    with_bound = solve(p)
    without = solve(replace(p, policy=replace(p.policy, compute_bound=False)))
    assert without.lower_bound is None and without.gap is None
    assert with_bound.lower_bound is not None
    assert with_bound.lower_bound <= with_bound.objective + TOL * max(1.0, with_bound.objective)
    assert check_plan(p, without) == []
    assert without.objective <= solve_greedy(p).objective + TOL
    if with_bound.status == "optimal" and with_bound.solver == "greedy":
        assert without.decisions == with_bound.decisions


def test_everything_fitting_on_prem_now_is_settled_without_a_search() -> None:
    nodes = tuple(Node(f"a-{k}", 8, 96, 1024, idle=True) for k in range(2))
    onprem = Target("onprem-a", "onprem", "A100", 8, 96, 1024, 0.0, nodes=nodes)
    pool = Target("p4d", "cloud", "A100", 8, 96, 1152, 22.0, max_new_nodes=4, provisioning_h=0.2)
    jobs = tuple(JobDemand(f"j{i}", g, 5.0, 2.0) for i, g in enumerate([1, 2, 4, 8]))
    p = PlacementProblem(jobs, (onprem, pool))
    plan = solve(p)
    assert (plan.solver, plan.status) == ("greedy", "optimal")
    assert all(d.action is Action.START for d in plan.decisions)
    assert plan.objective == 0.0 and plan.gap is None
    assert plan.lower_bound == 0.0 and lp_bound(p) == 0.0
    assert check_plan(p, plan) == []


def test_one_job_bursting_to_its_only_pool_is_settled_without_a_search() -> None:
    onprem = Target("onprem-a", "onprem", "A100", 8, 96, 1024, 0.0, nodes=(Node("a-1", 0, 0, 0),),
                    releases=(Release(40.0, "a-1", 8, 96, 1024),))
    pool = Target("p4d", "cloud", "A100", 8, 96, 1152, 22.0, max_new_nodes=4, provisioning_h=0.2)
    p = PlacementProblem((JobDemand("x", 8, 5.0, 3.0),), (onprem, pool), Policy(idle_h=0.25))
    plan = solve(p)
    assert (plan.solver, plan.status) == ("greedy", "optimal")
    assert plan.decision("x").action is Action.BURST and plan.new_nodes == {"p4d": 1}
    assert abs(plan.objective - full_search(p)) <= TOL
