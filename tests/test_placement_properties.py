"""Properties on random small queues: every solver's plan is valid, CP-SAT never loses to greedy, bounds hold."""

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
    solve_cpsat,
    solve_greedy,
)
from spillover.placement.cpsat import cpsat_settled

GPU_TYPES = ["A100", "H100"]


@st.composite
def targets(draw: st.DrawFn, k: int) -> Target:
    kind = draw(st.sampled_from(["onprem", "cloud"]))
    gpn = draw(st.sampled_from([4, 8]))
    cpu, mem = 8.0 * gpn, 64.0 * gpn
    nodes = []
    releases = []
    for n in range(draw(st.integers(0, 3))):
        name = f"n{n}"  # clusters may reuse node names
        free = draw(st.integers(0, gpn))
        idle = free == gpn and draw(st.booleans())
        share = draw(st.sampled_from([0.25, 0.5, 1.0]))  # how much CPU the busy part leaves
        ready = draw(st.sampled_from([0.0, 0.0, 0.3])) if kind == "cloud" else 0.0
        nodes.append(Node(name, free, cpu * free / gpn * share, mem * free / gpn, ready_in_h=ready, idle=idle))
        if kind == "onprem" and not idle:
            for _ in range(draw(st.integers(0, 2))):
                g = draw(st.integers(1, gpn))
                releases.append(Release(draw(st.floats(0.1, 12.0)), name, g, cpu * g / gpn, mem * g / gpn))
    return Target(
        id=f"t{k}",
        kind=kind,
        gpu_type=draw(st.sampled_from(GPU_TYPES)),
        gpus_per_node=gpn,
        cpu_per_node=cpu,
        memory_gib_per_node=mem,
        price_per_node_h=draw(st.sampled_from([0.0, 2.0])) if kind == "onprem" else draw(st.floats(2.0, 40.0)),
        nodes=tuple(nodes),
        speed=draw(st.sampled_from([1.0, 2.0])),
        max_new_nodes=draw(st.integers(0, 3)) if kind == "cloud" else 0,
        provisioning_h=draw(st.sampled_from([0.0, 0.2, 0.5])),
        releases=tuple(releases),
        spot=kind == "cloud" and draw(st.booleans()),
    )


@st.composite
def problems(draw: st.DrawFn) -> PlacementProblem:
    ts = tuple(draw(targets(k)) for k in range(draw(st.integers(1, 4))))
    jobs = []
    for i in range(draw(st.integers(1, 6))):
        gpus = draw(st.sampled_from([1, 1, 2, 4, 8]))
        jobs.append(JobDemand(
            id=f"j{i}",
            gpus=gpus,
            runtime_h=draw(st.floats(0.5, 20.0)),
            value_of_time=draw(st.sampled_from([0.0, 0.5, 2.0, 10.0])),
            nodes=draw(st.sampled_from([1, 1, 1, 2])),
            cpu=draw(st.sampled_from([0.0, 4.0, 8.0 * gpus])),
            memory_gib=draw(st.sampled_from([0.0, 32.0, 64.0 * gpus])),
            gpu_types=draw(st.sampled_from([frozenset(), frozenset({"A100"}), frozenset({"H100"})])),
            priority=draw(st.integers(0, 1)),
            checkpointable=draw(st.booleans()),
            waited_h=draw(st.sampled_from([0.0, 1.0])),
        ))
    policy = Policy(
        max_cloud_gpus=draw(st.sampled_from([None, 8, 16, 32])),
        cloud_gpus_in_use=draw(st.sampled_from([0, 4, 8])),
        idle_h=draw(st.sampled_from([0.0, 0.25])),
        max_wait_h=48.0,
        spot_for_non_checkpointable=draw(st.booleans()),
        time_limit_s=0.5,
    )
    return PlacementProblem(tuple(jobs), ts, policy)


SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(problems())
def test_greedy_and_cpsat_plans_are_valid_and_cpsat_never_loses(p: PlacementProblem) -> None:
    greedy = solve_greedy(p)
    joint = solve_cpsat(p)
    assert check_plan(p, greedy) == []
    assert check_plan(p, joint) == []
    assert joint.objective <= greedy.objective + 1e-6
    for plan in (greedy, joint):
        assert len(plan.decisions) == len(p.jobs)
        for job, d in zip(p.jobs, plan.decisions):
            if d.action is Action.WAIT:
                assert d.nodes == () and d.target is None
            else:
                assert len(d.nodes) == job.nodes and d.reason


@SETTINGS
@given(problems())
def test_the_lp_bounds_are_below_the_plan(p: PlacementProblem) -> None:
    settled, _ = cpsat_settled(p)
    objective = settled.plan.objective
    # Priced by the plan's own forecast, the relaxation contains the plan itself ...
    assert lp_bound(p, settled.wait_costs) <= objective + 1e-6 * max(1.0, objective)
    # ... and with every wait priced as if the job were alone in the queue it bounds every plan.
    alone = lp_bound(p)
    assert alone <= objective + 1e-6 * max(1.0, objective)
    assert alone <= solve_greedy(p).objective + 1e-6 * max(1.0, objective)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_solve_is_valid_and_no_worse_than_greedy(p: PlacementProblem) -> None:
    plan = solve(p)
    assert check_plan(p, plan) == []
    assert plan.objective <= solve_greedy(p).objective + 1e-6
    assert plan.lower_bound is not None and plan.lower_bound <= plan.objective + 1e-6


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems(), st.integers(0, 16))
def test_a_tighter_cloud_cap_is_never_exceeded(p: PlacementProblem, cap: int) -> None:
    p = replace(p, policy=replace(p.policy, max_cloud_gpus=cap, cloud_gpus_in_use=0))
    for plan in (solve_greedy(p), solve_cpsat(p)):
        gpn = {t.id: t.gpus_per_node for t in p.targets}
        assert sum(n * gpn[t] for t, n in plan.new_nodes.items()) <= cap
        assert check_plan(p, plan) == []
