"""The baseline burst rules as a user of `spillover simulate` would check them: who starts, who bursts, who waits,
how FIFO-with-skipping and EASY backfill treat a head of the queue that does not fit, and how the hindsight variants
book the same replay."""

from __future__ import annotations

import pytest

from spillover.placement import Action, JobDemand, Node, PlacementProblem, Release, Target
from spillover.simulations.baselines import baseline_solver, rule
from spillover.simulations.bench_policies import Scenario, scenario_config
from spillover.simulations.simulate import RunSpec, run_one
from spillover.simulations.workloads import to_arrivals
from spillover.simulations.workloads.common import TraceJob

H = 3600.0


def onprem(free: list[int], releases: tuple[Release, ...] = ()) -> Target:
    nodes = tuple(Node(f"n{i}", g, 96, 1024, idle=(g == 8)) for i, g in enumerate(free))
    return Target("onprem", "onprem", "A100", 8, 96, 1024, 0.0, nodes=nodes, releases=releases)


def cloud() -> Target:
    return Target("cloud-8", "cloud", "A100", 8, 96, 1152, 24.0, max_new_nodes=100, label="cloud/gpu8")


def job(jid: str, gpus: int, runtime_h: float = 2.0, waited_h: float = 0.0, **kw) -> JobDemand:
    return JobDemand(jid, gpus, runtime_h, 4.0, waited_h=waited_h, **kw)


def plan(policy: str, jobs, targets, queue: str = "fifo", **knob):
    return baseline_solver(rule(policy, **knob), queue)(PlacementProblem(tuple(jobs), tuple(targets)))


def test_no_wait_bursts_what_does_not_fit_and_starts_the_rest_on_prem():
    p = plan("no-wait", [job("fits", 4), job("big", 8)], [onprem([4, 0]), cloud()])
    assert p.decision("fits").action is Action.START and p.decision("fits").nodes == ("n0",)
    big = p.decision("big")
    assert big.action is Action.BURST and big.target == "cloud-8" and big.nodes == ("cloud-8/new-0",)
    assert p.new_nodes == {"cloud-8": 1}


def test_constant_wait_waits_until_its_deadline_and_asks_to_be_revisited_then():
    early = plan("constant-wait", [job("j", 8, waited_h=0.5)], [onprem([0]), cloud()], wait_h=2.0)
    assert early.decision("j").action is Action.WAIT
    assert early.revisit_h == pytest.approx(1.5)
    due = plan("constant-wait", [job("j", 8, waited_h=2.0)], [onprem([0]), cloud()], wait_h=2.0)
    assert due.decision("j").action is Action.BURST and "waited 2.00 h" in due.decision("j").reason


def test_compute_wait_budget_grows_with_gpus_times_runtime():
    jobs = [job("small", 1, runtime_h=1.0, waited_h=0.2), job("large", 8, runtime_h=10.0, waited_h=0.2)]
    p = plan("compute-wait", jobs, [onprem([0]), cloud()], k=0.1)  # budgets 0.1 h and 8 h
    assert p.decision("small").action is Action.BURST
    assert p.decision("large").action is Action.WAIT
    assert p.revisit_h == pytest.approx(8.0 - 0.2)


def test_onprem_only_never_bursts():
    p = plan("onprem-only", [job("j", 8, waited_h=100.0)], [onprem([0]), cloud()])
    assert p.decision("j").action is Action.WAIT and p.new_nodes == {} and p.revisit_h is None


def test_fifo_with_skipping_lets_a_small_job_pass_a_head_that_does_not_fit():
    jobs = [job("head", 8, waited_h=2.0), job("small", 2, waited_h=1.0)]
    p = plan("onprem-only", jobs, [onprem([4])], queue="fifo")
    assert p.decision("head").action is Action.WAIT
    assert p.decision("small").action is Action.START


def test_jobs_go_to_the_first_node_they_fit_as_in_starburst():
    # node n0 has 4 GPUs free, n1 and n10 have 2: a 2-GPU job takes n0 (first fit), not the tighter n1
    target = Target("onprem", "onprem", "A100", 8, 96, 1024, 0.0,
                    nodes=(Node("n10", 2, 96, 1024), Node("n1", 2, 96, 1024), Node("n0", 4, 96, 1024)))
    for queue in ("fifo", "easy"):
        assert plan("no-wait", [job("j", 2)], [target, cloud()], queue=queue).decision("j").nodes == ("n0",)
    assert plan("no-wait", [job("j", 2), job("k", 4)], [target, cloud()]).decision("k").action is Action.BURST


def test_easy_backfill_admits_only_jobs_that_do_not_delay_the_heads_reservation():
    # 4 GPUs free now, 4 more at 1 h: the 8-GPU head is reserved for 1 h
    target = onprem([4], releases=(Release(1.0, "n0", 4, 0, 0),))
    head = job("head", 8, waited_h=3.0)
    short = job("short", 4, runtime_h=0.5, waited_h=2.0)  # ends before the reservation: backfilled
    long = job("long", 4, runtime_h=5.0, waited_h=2.0)  # would hold the head back 4 h: not backfilled
    easy = plan("onprem-only", [head, long], [target], queue="easy")
    assert easy.decision("long").action is Action.WAIT
    fifo = plan("onprem-only", [head, long], [target], queue="fifo")
    assert fifo.decision("long").action is Action.START
    assert plan("onprem-only", [head, short], [target], queue="easy").decision("short").action is Action.START


def test_easy_reserves_no_head_that_would_time_out_first_and_lets_the_queue_behind_it_run():
    # the head's on-prem start is 1 h away: with k=1 it may wait 16 h and is reserved; with k=0.01 it may wait
    # 0.16 h and would time out first, so, as in Starburst's try_reserve, it gets no reservation
    target = onprem([4], releases=(Release(1.0, "n0", 4, 0, 0),))
    head = job("head", 8, waited_h=0.1)
    long = job("long", 4, runtime_h=5.0, waited_h=0.05)
    patient = plan("compute-wait", [head, long], [target, cloud()], queue="easy", k=1.0)
    assert "reserved on-prem (EASY) in 1.00 h" in patient.decision("head").reason
    assert patient.decision("long").action is Action.WAIT
    hasty = plan("compute-wait", [head, long], [target, cloud()], queue="easy", k=0.01)
    assert hasty.decision("head").action is Action.WAIT and "reserved" not in hasty.decision("head").reason
    assert hasty.decision("long").action is Action.START


def test_an_easy_reservation_goes_to_the_node_with_room_first_then_the_first_node():
    def busy(ends: dict[str, float]) -> Target:
        return Target("onprem", "onprem", "A100", 8, 96, 1024, 0.0,
                      nodes=tuple(Node(n, 0, 96, 1024) for n in ends),
                      releases=tuple(Release(at, n, 8, 0, 0) for n, at in ends.items()))

    def reserved(target: Target) -> str:
        return plan("onprem-only", [job("head", 8)], [target], queue="easy").decision("head").reason

    assert "in 1.00 h on n1" in reserved(busy({"n0": 2.0, "n1": 1.0}))
    assert "in 1.00 h on n0" in reserved(busy({"n1": 1.0, "n0": 1.0}))


def test_easy_reservations_are_kept_between_plans_and_a_reserved_job_does_not_burst():
    # budgets: 0.1 x 8 GPUs x 2 h = 1.6 h for head and next, 16 h for third
    solve = baseline_solver(rule("compute-wait", k=0.1), "easy")  # one solver, as one replay uses it
    first = solve(PlacementProblem((job("head", 8), job("next", 8)),
                                   (onprem([4], releases=(Release(1.0, "n0", 4, 0, 0),)), cloud())))
    assert "reserved on-prem (EASY) in 1.00 h" in first.decision("head").reason
    assert first.decision("next").action is Action.WAIT and "reserved" not in first.decision("next").reason
    # 1.7 h later the node is still not free (its job runs late): past their budgets, head keeps its reservation
    # and next bursts; third, the first job without one, gets the next reservation, behind head's
    later = (onprem([4], releases=(Release(0.5, "n0", 4, 0, 0),)), cloud())
    jobs = (job("head", 8, waited_h=1.7), job("next", 8, waited_h=1.7), job("third", 8, 20.0, waited_h=1.0))
    second = solve(PlacementProblem(jobs, later))
    assert second.decision("head").action is Action.WAIT
    assert "holds an on-prem reservation" in second.decision("head").reason
    assert second.decision("next").action is Action.BURST
    assert "reserved on-prem (EASY) in 2.50 h" in second.decision("third").reason
    # a solver without that memory bursts head
    assert plan("compute-wait", jobs, later, queue="easy", k=0.1).decision("head").action is Action.BURST


def test_an_unknown_baseline_is_refused_with_the_valid_names():
    with pytest.raises(ValueError, match="valid: no-wait, constant-wait, compute-wait, onprem-only"):
        rule("always-burst")


def tiny_replay(jobs: list[TraceJob], spec: RunSpec):
    """A replay through the real loop on one on-prem node of 8 GPUs, the reference cloud beside it."""
    return run_one(scenario_config(Scenario("tiny", "-", onprem_nodes=1)), to_arrivals(jobs), spec,
                   estimates_exact=True)


def test_hindsight_books_a_cloud_jobs_wait_as_zero_and_changes_nothing_else():
    # "a" runs on-prem at once; "b" waits out its 0.4 h budget (0.05 x 8 GPUs x 1 h) and bursts; "c" (budget 4 h)
    # waits 1.8 h for "a" to end and runs on-prem
    jobs = [TraceJob("a", 0, 8, 2 * H, "research"), TraceJob("b", 0.1 * H, 8, 1 * H, "research"),
            TraceJob("c", 0.2 * H, 8, 10 * H, "research")]
    plain = tiny_replay(jobs, RunSpec("compute-wait", 0.05, "easy"))
    hind = plain.hindsight
    assert hind is not None and hind.policy == "compute-wait-hindsight"
    assert (hind.setting, hind.queue) == ("k=0.05", "easy")
    assert plain.wait_avg_h == pytest.approx((0 + 0.4 + 1.8) / 3)
    assert hind.wait_avg_h == pytest.approx((0 + 0 + 1.8) / 3)  # only the on-prem wait is left
    assert hind.jct_avg_h == pytest.approx(plain.jct_avg_h - 0.4 / 3)
    assert hind.cloud_gpu_hours == plain.cloud_gpu_hours == pytest.approx(8.0)
    assert hind.cloud_gpu_hours_measured == plain.cloud_gpu_hours_measured
    assert hind.onprem_utilization == plain.onprem_utilization
    assert hind.cloud_usd == plain.cloud_usd


def test_no_wait_has_no_hindsight_variant_and_constant_wait_has_one():
    jobs = [TraceJob("a", 0, 8, 1 * H, "research"), TraceJob("b", 0.1 * H, 8, 1 * H, "research")]
    assert tiny_replay(jobs, RunSpec("no-wait", None, "easy")).hindsight is None
    cw = tiny_replay(jobs, RunSpec("constant-wait", 0.5, "fifo"))
    assert cw.hindsight is not None and cw.hindsight.policy == "constant-wait-hindsight"
    assert cw.wait_avg_h == pytest.approx(0.5 / 2) and cw.hindsight.wait_avg_h == 0.0
