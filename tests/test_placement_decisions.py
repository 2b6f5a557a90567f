"""Decisions a user would recognise: start on-prem, burst, wait (and why), gangs, spot, caps."""

from __future__ import annotations

import pytest

from spillover.placement import (
    Action,
    JobDemand,
    Node,
    PlacementProblem,
    Plan,
    Policy,
    Release,
    Target,
    check_plan,
    solve,
    solve_cpsat,
    solve_greedy,
)

SOLVERS = [solve_greedy, solve_cpsat, solve]


def onprem(nodes: tuple[Node, ...], releases: tuple[Release, ...] = (), tid: str = "onprem-a") -> Target:
    return Target(tid, "onprem", "A100", 8, 96, 1024, 0.0, nodes=nodes, releases=releases)


def busy_onprem(free_at_h: float) -> Target:
    """One on-prem node, fully busy until `free_at_h`."""
    return onprem((Node("a-1", 0, 0, 0),), (Release(free_at_h, "a-1", 8, 96, 1024),))


def pool(tid: str, price: float, gpu_type: str = "A100", **kw) -> Target:
    kw.setdefault("max_new_nodes", 4)
    kw.setdefault("provisioning_h", 0.2)
    return Target(tid, "cloud", gpu_type, 8, 96, 1152, price, label=kw.pop("label", tid), **kw)


def job(jid: str, gpus: int, runtime_h: float = 10.0, value_of_time: float = 3.0, **kw) -> JobDemand:
    return JobDemand(jid, gpus, runtime_h, value_of_time, **kw)


def solved(solver, problem: PlacementProblem) -> Plan:
    plan = solver(problem)
    assert check_plan(problem, plan) == []
    assert [d.job_id for d in plan.decisions] == [j.id for j in problem.jobs]
    return plan


@pytest.mark.parametrize("solver", SOLVERS)
def test_onprem_room_means_start_there_and_leave_the_cloud_alone(solver) -> None:
    p = PlacementProblem(
        (job("train", 4),),
        (onprem((Node("a-1", 4, 48, 512), Node("a-2", 0, 0, 0))), pool("aws-p4d", 22.0)),
    )
    d = solved(solver, p).decision("train")
    assert d.action is Action.START
    assert (d.target, d.nodes, d.start_h) == ("onprem-a", ("a-1",), 0.0)
    assert d.reason == "started on onprem-a (node a-1 had 4 free A100s)"
    assert solver(p).new_nodes == {}


@pytest.mark.parametrize("solver", SOLVERS)
def test_onprem_full_for_long_bursts_to_the_cheapest_pool_the_job_may_use(solver) -> None:
    p = PlacementProblem(
        (job("train", 8, gpu_types=frozenset({"A100"})),),
        (
            busy_onprem(20.0),
            pool("aws-p4d", 22.0, label="aws-us-east-1/p4d"),
            pool("gcp-a2", 29.0, label="gcp-us-central1/a2"),
            pool("aws-p5", 12.0, gpu_type="H100", label="aws-us-east-1/p5"),
        ),
    )
    plan = solved(solver, p)
    d = plan.decision("train")
    assert (d.action, d.target, d.nodes) == (Action.BURST, "aws-p4d", ("aws-p4d/new-0",))
    assert plan.new_nodes == {"aws-p4d": 1}
    assert d.start_h == pytest.approx(0.2)
    # 8 GPUs x $3/GPU-h x 20 h of waiting vs 10 h on one $22 node plus 0.2 h of delay.
    assert d.reason == (
        "burst to aws-us-east-1/p4d on 1 new node ready in 0.2 h: on-prem is full until ~20.0 h from now; "
        "waiting would cost $480, the cloud run costs $225"
    )


@pytest.mark.parametrize("solver", SOLVERS)
def test_onprem_freeing_up_soon_means_wait_for_it(solver) -> None:
    p = PlacementProblem((job("train", 8),), (busy_onprem(0.4), pool("gcp-a2", 29.0, label="gcp-us-central1/a2")))
    plan = solved(solver, p)
    d = plan.decision("train")
    assert (d.action, d.wait_target, d.start_h) == (Action.WAIT, "onprem-a", 0.4)
    assert d.reason == (
        "waiting for onprem-a (expected start in 0.4 h): waiting costs $9.60, "
        "the cheapest burst (gcp-us-central1/a2) costs $301"
    )
    assert plan.new_nodes == {}


@pytest.mark.parametrize("solver", SOLVERS)
def test_cloud_gpu_cap_reached_means_wait_and_say_so(solver) -> None:
    p = PlacementProblem(
        (job("train", 8, value_of_time=50.0),),
        (busy_onprem(30.0), pool("aws-p4d", 22.0)),
        Policy(max_cloud_gpus=64, cloud_gpus_in_use=60),
    )
    d = solved(solver, p).decision("train")
    assert d.action is Action.WAIT
    assert d.reason == "waiting: cloud GPU cap of 64 reached; expected start on onprem-a in 30.0 h"


@pytest.mark.parametrize("solver", SOLVERS)
def test_a_job_nothing_can_host_waits_and_says_why(solver) -> None:
    p = PlacementProblem(
        (job("big", 8, nodes=2, gpu_types=frozenset({"H100"})),),
        (busy_onprem(1.0), pool("aws-p4d", 22.0)),
        Policy(max_wait_h=96.0),
    )
    d = solved(solver, p).decision("big")
    assert (d.action, d.start_h, d.wait_target) == (Action.WAIT, 96.0, None)
    assert d.reason.startswith("waiting: no target has a node for 2 x 8 H100 (allowed types: H100)")


@pytest.mark.parametrize("solver", SOLVERS)
def test_a_gang_of_two_takes_two_idle_nodes_whole(solver) -> None:
    t = onprem((Node("a-1", 8, 96, 1024, idle=True), Node("a-2", 4, 48, 512), Node("a-3", 8, 96, 1024, idle=True)))
    p = PlacementProblem((job("small", 4), job("gang", 8, nodes=2)), (t, pool("aws-p4d", 22.0)))
    plan = solved(solver, p)
    gang = plan.decision("gang")
    assert gang.action is Action.START
    assert sorted(gang.nodes) == ["a-1", "a-3"]
    assert plan.decision("small").nodes == ("a-2",)
    assert "2 idle nodes (a-1, a-3)" in gang.reason or "2 idle nodes (a-3, a-1)" in gang.reason


@pytest.mark.parametrize("solver", SOLVERS)
def test_a_gang_never_shares_a_node(solver) -> None:
    # One idle node plus one half-free node: the gang cannot start on-prem, even though 12 GPUs are free.
    t = onprem((Node("a-1", 8, 96, 1024, idle=True), Node("a-2", 4, 48, 512)), (Release(5.0, "a-2", 4, 48, 512),))
    p = PlacementProblem((job("gang", 4, nodes=2, value_of_time=0.1),), (t,))
    d = solved(solver, p).decision("gang")
    assert (d.action, d.start_h) == (Action.WAIT, 5.0)


@pytest.mark.parametrize("solver", SOLVERS)
def test_checkpointable_jobs_take_cheaper_spot_and_others_never_do(solver) -> None:
    pools = (busy_onprem(40.0), pool("p4d", 22.0), pool("p4d-spot", 8.0, spot=True))
    jobs = (job("ckpt", 8, checkpointable=True), job("plain", 8))
    plan = solved(solver, PlacementProblem(jobs, pools))
    assert plan.decision("ckpt").target == "p4d-spot"
    assert plan.decision("plain").target == "p4d"
    allowed = solved(solver, PlacementProblem(jobs, pools, Policy(spot_for_non_checkpointable=True)))
    assert allowed.decision("plain").target == "p4d-spot"


@pytest.mark.parametrize("solver", SOLVERS)
def test_a_booting_node_is_used_and_its_delay_is_priced(solver) -> None:
    booting = pool("p4d", 22.0, nodes=(Node("p4d-0", 8, 96, 1152, ready_in_h=0.1, idle=True),), max_new_nodes=0)
    p = PlacementProblem((job("train", 8),), (busy_onprem(40.0), booting))
    plan = solved(solver, p)
    d = plan.decision("train")
    assert (d.action, d.nodes, d.start_h) == (Action.BURST, ("p4d-0",), 0.1)
    assert d.cost == pytest.approx(22.0 * 10 + 3.0 * 8 * 0.1)
    assert plan.new_nodes == {}


@pytest.mark.parametrize("solver", SOLVERS)
def test_new_nodes_respect_the_pool_limit(solver) -> None:
    p = PlacementProblem(tuple(job(f"j{i}", 8, value_of_time=20.0) for i in range(4)),
                         (busy_onprem(50.0), pool("p4d", 22.0, max_new_nodes=3)))
    plan = solved(solver, p)
    assert plan.new_nodes == {"p4d": 3}
    waiting = [d for d in plan.decisions if d.action is Action.WAIT]
    assert len(waiting) == 1
    assert waiting[0].reason == "waiting: no new nodes left in p4d; expected start on onprem-a in 50.0 h"


def test_cpsat_beats_first_come_first_served_when_a_small_job_would_block_a_big_one() -> None:
    # One idle node. In queue order the small long job takes it, so the big urgent one must burst;
    # the joint plan gives the node to the big job and lets the small one wait cheaply.
    p = PlacementProblem(
        (job("small", 1, runtime_h=20.0, value_of_time=0.1), job("big", 8, runtime_h=10.0, value_of_time=5.0)),
        (onprem((Node("a-1", 8, 96, 1024, idle=True),)), pool("p4d", 32.0)),
    )
    greedy = solved(solve_greedy, p)
    joint = solved(solve_cpsat, p)
    assert greedy.decision("small").action is Action.START
    assert greedy.decision("big").action is Action.BURST
    assert joint.decision("big").action is Action.START
    assert joint.decision("small").action is Action.WAIT
    assert joint.objective < greedy.objective - 100
    assert joint.solver == "cp-sat"


def test_solve_attaches_a_bound_and_a_time() -> None:
    p = PlacementProblem(
        tuple(job(f"j{i}", g) for i, g in enumerate([1, 2, 4, 8, 8])),
        (onprem((Node("a-1", 4, 48, 512), Node("a-2", 8, 96, 1024, idle=True))), pool("p4d", 22.0)),
    )
    plan = solved(solve, p)
    assert plan.lower_bound is not None
    assert plan.lower_bound <= plan.objective + 1e-6
    assert plan.solve_s > 0
    assert plan.objective <= solve_greedy(p).objective + 1e-6


def test_an_empty_queue_gives_an_empty_plan() -> None:
    p = PlacementProblem((), (busy_onprem(1.0), pool("p4d", 22.0)))
    for solver in SOLVERS:
        plan = solver(p)
        assert (plan.decisions, plan.new_nodes, plan.objective) == ((), {}, 0.0)


@pytest.mark.parametrize("solver", SOLVERS)
def test_clusters_may_reuse_node_names(solver) -> None:
    a = onprem((Node("node-1", 8, 96, 1024, idle=True),))
    b = onprem((Node("node-1", 8, 96, 1024, idle=True),), tid="onprem-b")
    p = PlacementProblem((job("x", 8), job("y", 8)), (a, b))
    plan = solved(solver, p)
    assert {(d.target, d.nodes) for d in plan.decisions} == {("onprem-a", ("node-1",)), ("onprem-b", ("node-1",))}
