"""`check_plan` catches each way a plan can break the rules (so the property tests can trust it)."""

from __future__ import annotations

from dataclasses import replace

from spillover.placement import (
    Action,
    Decision,
    JobDemand,
    Node,
    PlacementProblem,
    Plan,
    Policy,
    Target,
    check_plan,
    solve_greedy,
)

ONPREM = Target("onprem-a", "onprem", "A100", 8, 96, 1024, 0.0,
                nodes=(Node("a-1", 8, 96, 1024, idle=True), Node("a-2", 4, 48, 512)))
CLOUD = Target("p4d", "cloud", "A100", 8, 96, 1152, 22.0, max_new_nodes=2, provisioning_h=0.2)


def problem(*jobs: JobDemand, policy: Policy = Policy()) -> PlacementProblem:
    return PlacementProblem(tuple(jobs), (ONPREM, CLOUD), policy)


def start(jid: str, node: str, target: str = "onprem-a") -> Decision:
    action = Action.START if target == "onprem-a" else Action.BURST
    return Decision(jid, action, "test", target=target, nodes=(node,))


def plan(*decisions: Decision, new_nodes: dict[str, int] | None = None) -> Plan:
    return Plan(tuple(decisions), new_nodes or {}, 0.0, None, "greedy", "test", 0.0)


def j(jid: str, gpus: int, **kw) -> JobDemand:
    return JobDemand(jid, gpus, 1.0, 1.0, **kw)


def test_a_valid_plan_passes() -> None:
    p = problem(j("x", 4), j("y", 8), j("z", 8))
    assert check_plan(p, solve_greedy(p)) == []


def test_missing_and_duplicate_decisions_are_reported() -> None:
    p = problem(j("x", 1), j("y", 1))
    assert check_plan(p, plan(start("x", "a-1"))) == ["job y has no decision"]
    twice = plan(start("x", "a-1"), start("x", "a-1"), start("y", "a-1"))
    assert "job x is decided 2 times" in check_plan(p, twice)


def test_an_oversubscribed_node_is_reported_in_every_dimension() -> None:
    p = problem(j("x", 4), j("y", 2, cpu=60.0))
    out = check_plan(p, plan(start("x", "a-2"), start("y", "a-2")))
    assert "node a-2 is oversubscribed: 6 GPUs bound, 4 free" in out
    assert "node a-2 is oversubscribed: 60 CPUs bound, 48 free" in out


def test_gang_rules_are_enforced() -> None:
    p = problem(j("g", 4, nodes=2), j("x", 1))
    shared = Decision("g", Action.START, "test", target="onprem-a", nodes=("a-1", "a-2"))
    out = check_plan(p, plan(shared, start("x", "a-1")))
    assert "gang job g uses node a-2, which is not idle" in out
    assert "node a-1 runs a gang replica and 1 other replica(s)" in out


def test_infeasible_targets_and_unknown_nodes_are_reported() -> None:
    p = problem(j("h", 1, gpu_types=frozenset({"H100"})), j("x", 1))
    out = check_plan(p, plan(start("h", "a-1"), start("x", "a-9")))
    assert "job h cannot run on onprem-a: A100 is not an allowed GPU type" in out
    assert "job x uses node a-9, which onprem-a does not have" in out


def test_new_node_limits_and_the_cloud_cap_are_enforced() -> None:
    p = problem(j("x", 8), j("y", 8), j("z", 8), policy=Policy(max_cloud_gpus=16))
    burst = [start(n, f"p4d/new-{k}", "p4d") for k, n in enumerate("xyz")]
    out = check_plan(p, plan(*burst, new_nodes={"p4d": 3}))
    assert "p4d gets 3 new nodes, more than its limit of 2" in out
    assert "cloud GPUs 24 exceed the cap of 16" in out
    assert "plan says 1 new nodes on p4d, decisions use 3" in check_plan(p, plan(*burst, new_nodes={"p4d": 1}))


def test_waiting_while_a_cheaper_start_is_free_is_reported() -> None:
    p = problem(j("x", 4))
    good = solve_greedy(p)
    idle = Decision("x", Action.WAIT, "test", start_h=0.0, cost=0.0, wait_target="onprem-a")
    out = check_plan(p, replace(good, decisions=(idle,)))
    assert any(v.startswith("job x waits (cost 0.00) although running now on onprem-a costs 0.00") for v in out)


def test_a_wrong_objective_is_reported() -> None:
    p = problem(j("x", 8), j("y", 8), j("z", 8))
    good = solve_greedy(p)
    out = check_plan(p, replace(good, objective=good.objective + 5))
    assert len(out) == 1 and out[0].startswith("objective")
