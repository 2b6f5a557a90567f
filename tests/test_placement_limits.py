"""Team quotas, dollar budgets and cloud GPU caps in the solver: a team holds no more on-prem GPUs than its quota and
what its cohort lends, and its bursts stay inside its budget and its cap, whichever solver finds the plan."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from spillover.placement import Action, JobDemand, Node, PlacementProblem, Policy, Target, check_plan, solve
from spillover.placement.greedy import solve_greedy
from spillover.placement.types import Budget, CloudCap, Quota


def onprem(free_nodes: int = 4) -> Target:
    nodes = tuple(Node(f"n{k}", 8, 96.0, 1024.0, idle=True) for k in range(free_nodes))
    return Target("onprem", "onprem", "A100", 8, 96.0, 1024.0, 0.0, nodes=nodes)


def pool(max_new: int = 10) -> Target:
    return Target("aws/p4d", "cloud", "A100", 8, 96.0, 1024.0, 32.0, max_new_nodes=max_new, provisioning_h=0.1,
                  cloud="aws", label="aws/p4d")


def job(jid: str, team: str, gpus: int = 8, runtime_h: float = 2.0, value: float = 50.0,
        budgets: tuple[str, ...] = ()) -> JobDemand:
    return JobDemand(jid, gpus, runtime_h, value, cpu=1.0, memory_gib=4.0, team=team, budgets=budgets)


def decided(problem: PlacementProblem, solver=solve) -> dict[str, tuple[Action, str]]:
    plan = solver(problem)
    assert check_plan(problem, plan) == []
    return {d.job_id: (d.action, d.reason) for d in plan.decisions}


@pytest.mark.parametrize("solver", [solve, solve_greedy])
def test_a_team_without_a_cohort_holds_no_more_than_its_quota(solver):
    quotas = (Quota("a", "A100", nominal=8),)
    problem = PlacementProblem((job("a1", "a"), job("a2", "a"), job("b1", "b")), (onprem(),),
                               Policy(quotas=quotas))
    d = decided(problem, solver)
    assert sorted(a for a, _ in d.values()) == sorted([Action.START, Action.START, Action.WAIT])
    assert d["b1"][0] is Action.START  # b has no quota: not limited
    waiting = next(r for a, r in d.values() if a is Action.WAIT)
    assert "over quota" in waiting and "team a holds 8 of its 8 A100 GPUs" in waiting


def test_a_team_borrows_its_cohorts_idle_quota_up_to_the_lending_and_borrowing_limits():
    jobs = tuple(job(f"a{k}", "a") for k in range(4))
    base = (Quota("a", "A100", 8, cohort="c"), Quota("b", "A100", 24, cohort="c"))
    d = decided(PlacementProblem(jobs, (onprem(),), Policy(quotas=base)))
    assert [a for a, _ in d.values()].count(Action.START) == 4  # 8 own + 24 of b's idle quota
    lend = (base[0], replace(base[1], lending_limit=8))
    d = decided(PlacementProblem(jobs, (onprem(),), Policy(quotas=lend)))
    assert [a for a, _ in d.values()].count(Action.START) == 2
    borrow = (replace(base[0], borrowing_limit=16), base[1])
    d = decided(PlacementProblem(jobs, (onprem(),), Policy(quotas=borrow)))
    assert [a for a, _ in d.values()].count(Action.START) == 3
    # b's own jobs use 16 of its 24: a may borrow the other 8 only
    used = (base[0], replace(base[1], used=16))
    d = decided(PlacementProblem(jobs, (onprem(),), Policy(quotas=used)))
    assert [a for a, _ in d.values()].count(Action.START) == 2


def test_a_team_over_its_budget_waits_on_prem_and_says_why():
    jobs = (job("a1", "a", budgets=("team:a",)), job("a2", "a", budgets=("team:a",)), job("b1", "b"))
    # on-prem is full; each cloud run costs 2 h x $32 = $64 and waiting is worth much more
    problem = PlacementProblem(jobs, (onprem(0), pool()), Policy(budgets=(Budget("team:a", 100.0),)))
    d = decided(problem)
    assert d["b1"][0] is Action.BURST
    actions = sorted((d["a1"][0], d["a2"][0]))
    assert actions == sorted([Action.BURST, Action.WAIT])
    reason = next(r for a, r in (d["a1"], d["a2"]) if a is Action.WAIT)
    assert reason.startswith("waiting on-prem: budget exhausted (budget team:a has $36.00 left, the cheapest cloud "
                             "run costs $64.00)")
    # a budget of another cloud does not hold it back
    other = PlacementProblem(jobs, (onprem(0), pool()), Policy(budgets=(Budget("team:a", 0.0, cloud="gcp"),)))
    assert all(a is Action.BURST for a, _ in decided(other).values())


@pytest.mark.parametrize("solver", [solve, solve_greedy])
def test_a_team_at_its_cloud_gpu_cap_waits_and_others_still_burst(solver):
    jobs = (job("a1", "a"), job("a2", "a"), job("a3", "a", gpus=4), job("b1", "b"))
    caps = (CloudCap("a", 16, used=4),)  # 4 GPUs of a already run in the cloud: room for 12
    d = decided(PlacementProblem(jobs, (onprem(0), pool()), Policy(cloud_caps=caps)), solver)
    assert d["b1"][0] is Action.BURST
    burst = [j for j in ("a1", "a2", "a3") if d[j][0] is Action.BURST]
    assert sum(8 if j != "a3" else 4 for j in burst) <= 12 and burst, d
    waiting = [r for j, (a, r) in d.items() if a is Action.WAIT]
    assert waiting and all(r.startswith("waiting on-prem: team cloud GPU cap reached (team a holds ") for r in waiting)


def test_check_plan_names_a_plan_that_overspends_or_over_borrows():
    jobs = (job("a1", "a", budgets=("team:a",)), job("a2", "a", budgets=("team:a",)))
    free = PlacementProblem(jobs, (onprem(1), pool()), Policy())
    plan = solve(free)  # one on-prem, one burst
    limited = replace(free, policy=Policy(quotas=(Quota("a", "A100", 0),), budgets=(Budget("team:a", 10.0),)))
    problems = check_plan(limited, plan)
    assert any("of which" in p or "over its quota of 0" in p for p in problems), problems
    assert any("against budget team:a, which has $10.00 left" in p for p in problems), problems
    capped = replace(free, policy=Policy(cloud_caps=(CloudCap("a", 4),)))
    assert check_plan(capped, plan) == ["team a holds 8 cloud GPUs, over its cap of 4"]


def test_every_plan_keeps_to_random_quotas_budgets_and_cloud_caps():
    rng = random.Random(7)
    for _ in range(60):
        teams = ["a", "b", "c"]
        quotas = tuple(Quota(t, "A100", rng.choice([0, 8, 16]), used=rng.choice([0, 0, 8]),
                             borrowing_limit=rng.choice([None, 0, 8]), lending_limit=rng.choice([None, 0, 8]),
                             cohort=rng.choice([None, "c1"])) for t in teams[:2])
        budgets = tuple(Budget(f"team:{t}", rng.choice([0.0, 50.0, 200.0])) for t in teams)
        jobs = tuple(job(f"j{k}", rng.choice(teams), gpus=rng.choice([1, 4, 8]), runtime_h=rng.uniform(0.5, 4),
                         value=rng.uniform(1, 80), budgets=(f"team:{t}",) if rng.random() < 0.8 else ())
                     for k, t in enumerate(rng.choice(teams) for _ in range(rng.randint(1, 12))))
        jobs = tuple(replace(j, budgets=(f"team:{j.team}",) if j.budgets else ()) for j in jobs)
        caps = tuple(CloudCap(t, rng.choice([0, 8, 16]), used=rng.choice([0, 4])) for t in teams if rng.random() < 0.5)
        problem = PlacementProblem(jobs, (onprem(rng.randint(0, 4)), pool(rng.randint(0, 6))),
                                   Policy(quotas=quotas, budgets=budgets, cloud_caps=caps))
        for solver in (solve, solve_greedy):
            assert check_plan(problem, solver(problem)) == []
