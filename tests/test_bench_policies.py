"""The policy benchmark's verdicts: frontier, dominance and the 0.9x rule at No-Wait's JCT + 5%."""

from __future__ import annotations

from simulations.bench_policies import SCENARIOS, check, frontier, thinned
from simulations.metrics import RunMetrics


def run(policy: str, jct: float, cloud: float, setting: str = "") -> RunMetrics:
    return RunMetrics(policy=policy, setting=setting, queue="", jobs=100, measured=80, unfinished=0,
                      cloud_gpu_hours=cloud, cloud_gpu_hours_measured=cloud, cloud_usd=3 * cloud,
                      jct_avg_h=jct, lower_bound_at_makespan=100.0)


def test_frontier_keeps_only_points_nothing_beats():
    pts = [run("x", 10, 500), run("x", 11, 600), run("x", 12, 300), run("x", 9, 900)]
    assert frontier(pts) == [(9, 900), (10, 500), (12, 300)]


def test_a_spillover_curve_below_every_baseline_meets_the_targets():
    results = [run("no-wait", 10.0, 1000), run("compute-wait", 10.4, 800, "k=0.1"),
               run("constant-wait", 11.0, 900, "wait_h=1"),
               run("spillover-job", 10.0, 900, "v=64"), run("spillover-job", 10.3, 600, "v=8")]
    v = check(results, SCENARIOS["gavel"], "spillover-job")
    assert v["baseline_points_dominated"] == "3/3"
    assert v["best_baseline_cloud_gpu_h"] == 800 and v["spillover_cloud_gpu_h"] == 600
    assert v["ratio"] == 0.75 and v["ratio_target_met"]
    assert v["gap_closed"] == (800 - 600) / (800 - 100)


def test_a_curve_that_is_beaten_somewhere_is_reported_so():
    results = [run("no-wait", 10.0, 1000), run("compute-wait", 10.4, 500, "k=0.1"),
               run("spillover", 10.1, 950, "v=64"), run("spillover", 10.45, 480, "v=4")]
    v = check(results, SCENARIOS["gavel"], "spillover")
    # nothing of spillover's is as fast as No-Wait, nor as cheap as compute-wait at 10.4 h (10.45 h is slower)
    assert v["baseline_points_dominated"] == "0/2"
    assert v["dominated_share_by_policy"]["compute-wait"] == 0.0
    assert v["ratio"] == 480 / 500 and not v["ratio_target_met"]


def test_thinning_keeps_both_ends_of_each_sweep():
    s = thinned(SCENARIOS["gavel"], 3)
    assert s.k == (0.003, 0.03, 1.0) and s.value_of_job_time[0] == 8.0 and s.value_of_job_time[-1] == 512.0
