"""The per-class comparison: a replay's jobs split by GPUs and runtime, a baseline booked as its hindsight variant."""

from __future__ import annotations

import pytest

from spillover.simulations.bench_policies import Scenario, scenario_config
from spillover.simulations.classes import by_class, compare, replay
from spillover.simulations.workloads import to_arrivals
from spillover.simulations.workloads.common import TraceJob

H = 3600.0


@pytest.fixture(scope="module")
def run():
    # one on-prem node of 8 GPUs: "a" runs at once; "b" waits out its 0.4 h budget (0.05 x 8 GPUs x 1 h) and
    # bursts; "c" waits 1.8 h for "a" to end and runs on-prem
    config = scenario_config(Scenario("tiny", "-", onprem_nodes=1))
    jobs = [TraceJob("a", 0, 8, 2 * H, "research"), TraceJob("b", 0.1 * H, 8, 1 * H, "research"),
            TraceJob("c", 0.2 * H, 8, 10 * H, "research")]
    rp = to_arrivals(jobs)
    store = replay(config, rp, "compute-wait:easy=0.05")
    yield config, rp, store
    store.close()


def test_jobs_are_split_by_gpus_and_true_runtime_with_their_cloud_share(run):
    config, rp, store = run
    rows = {(r.gpus, r.runtime): r for r in by_class(store, config, rp.true_runtime_s)}
    assert set(rows) == {("8", "1-10 h"), ("8", "10-100 h")}
    short, long_ = rows["8", "1-10 h"], rows["8", "10-100 h"]
    assert (short.jobs, long_.jobs) == (2, 1)
    assert short.jct_h == pytest.approx((2 + 0.4 + 1) / 2, abs=0.02)  # "b" waited 0.4 h, then ran 1 h
    assert short.cloud_share == 0.5 and short.cloud_gpu_h == pytest.approx(8.0, abs=0.01)
    assert long_.jct_h == pytest.approx(1.8 + 10, abs=0.02) and long_.cloud_gpu_h == 0


def test_hindsight_zeroes_only_the_cloud_jobs_wait_and_the_comparison_totals_it(run):
    config, rp, store = run
    plain = by_class(store, config, rp.true_runtime_s)
    hind = by_class(store, config, rp.true_runtime_s, hindsight=True)
    short = {(r.gpus, r.runtime): r for r in hind}["8", "1-10 h"]
    assert short.jct_h == pytest.approx((2 + 1) / 2, abs=0.02)
    assert [r.cloud_gpu_h for r in hind] == [r.cloud_gpu_h for r in plain]
    text = compare(plain, hind, ("plain", "hindsight"))
    total = text.strip().splitlines()[-1].split("|")
    assert total[1].strip() == "all" and total[3].strip() == "3"
    assert float(total[6]) == pytest.approx(0.4 / 3, abs=0.01)  # the plain rule is slower by b's wait, over 3 jobs
