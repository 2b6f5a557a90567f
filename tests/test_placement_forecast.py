"""The on-prem start forecast: running jobs' ends, the queue ahead, gangs and starts now."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from spillover.placement import Forecast, JobDemand, Node, Policy, Release, Target, forecast_starts


def onprem(nodes: tuple[Node, ...], releases: tuple[Release, ...] = (), tid: str = "onprem-a", **kw) -> Target:
    return Target(tid, "onprem", kw.pop("gpu_type", "A100"), 8, 64, 512, 0.0, nodes=nodes, releases=releases, **kw)


def job(jid: str, gpus: int, runtime_h: float = 1.0, **kw) -> JobDemand:
    return JobDemand(jid, gpus, runtime_h, kw.pop("value_of_time", 1.0), **kw)


def test_a_job_starts_when_a_running_job_frees_enough_gpus() -> None:
    t = onprem((Node("a-1", 4, 32, 256),), (Release(2.5, "a-1", 4, 32, 256),))
    fc = forecast_starts([t], [job("small", 4), job("big", 8)])
    assert fc["small"].start_h == 0.0
    # 4 GPUs are free now but "small" holds them; all 8 are back only once both are done.
    assert fc["big"].start_h == 2.5
    assert fc["big"].target == "onprem-a"


def test_jobs_queue_behind_each_other_for_their_runtime() -> None:
    t = onprem((Node("a-1", 8, 64, 512, idle=True),))
    fc = forecast_starts([t], [job("first", 8, 3.0), job("second", 8, 2.0), job("third", 8, 1.0)])
    assert [fc[j].start_h for j in ("first", "second", "third")] == [0.0, 3.0, 5.0]


def test_a_faster_target_shortens_the_wait_of_the_jobs_behind() -> None:
    slow = onprem((Node("a-1", 8, 64, 512, idle=True),))
    fast = onprem((Node("h-1", 8, 64, 512, idle=True),), tid="onprem-h", gpu_type="H100", speed=2.0)
    assert forecast_starts([slow], [job("a", 8, 4.0), job("b", 8)])["b"].start_h == 4.0
    assert forecast_starts([fast], [job("a", 8, 4.0), job("b", 8)])["b"].start_h == 2.0


def test_higher_priority_and_longer_waiting_jobs_go_first() -> None:
    t = onprem((Node("a-1", 8, 64, 512, idle=True),))
    jobs = [job("new", 8, 1.0), job("urgent", 8, 1.0, priority=5), job("old", 8, 1.0, waited_h=3.0)]
    fc = forecast_starts([t], jobs)
    assert (fc["urgent"].start_h, fc["old"].start_h, fc["new"].start_h) == (0.0, 1.0, 2.0)


def test_jobs_started_now_hold_their_nodes_ahead_of_every_waiting_job() -> None:
    t = onprem((Node("a-1", 8, 64, 512, idle=True),))
    running = job("running", 6, 5.0)
    fc = forecast_starts([t], [job("waiting", 4)], started=[(running, "onprem-a", ("a-1",))])
    assert fc["waiting"].start_h == 5.0


def test_a_gang_waits_until_enough_nodes_are_wholly_free() -> None:
    t = onprem(
        (Node("a-1", 0, 0, 0), Node("a-2", 2, 16, 128), Node("a-3", 8, 64, 512, idle=True)),
        (Release(1.0, "a-1", 8, 64, 512), Release(3.0, "a-2", 6, 48, 384)),
    )
    fc = forecast_starts([t], [job("gang", 8, nodes=3)])
    assert fc["gang"].start_h == 3.0
    assert forecast_starts([t], [job("pair", 8, nodes=2)])["pair"].start_h == 1.0


def test_a_busy_node_without_releases_never_frees_up_for_a_gang() -> None:
    t = onprem((Node("a-1", 4, 32, 256), Node("a-2", 8, 64, 512, idle=True)))
    fc = forecast_starts([t], [job("gang", 4, nodes=2)], Policy(max_wait_h=100.0))
    assert fc["gang"] == Forecast(100.0, None)


def test_a_job_no_onprem_target_can_run_is_counted_at_max_wait() -> None:
    t = onprem((Node("a-1", 8, 64, 512, idle=True),))
    fc = forecast_starts([t], [job("h100-only", 8, gpu_types=frozenset({"H100"}))], Policy(max_wait_h=72.0))
    assert fc["h100-only"].start_h == 72.0
    assert fc["h100-only"].target is None


def test_the_earliest_target_wins() -> None:
    a = onprem((Node("a-1", 0, 0, 0),), (Release(4.0, "a-1", 8, 64, 512),))
    b = onprem((Node("b-1", 0, 0, 0),), (Release(1.5, "b-1", 8, 64, 512),), tid="onprem-b")
    fc = forecast_starts([a, b], [job("j", 8)])
    assert (fc["j"].start_h, fc["j"].target) == (1.5, "onprem-b")


def test_cpu_and_memory_count_too() -> None:
    t = onprem((Node("a-1", 8, 8, 512),), (Release(2.0, "a-1", 0, 56, 0),))
    fc = forecast_starts([t], [job("cpu-hungry", 1, cpu=32.0)])
    assert fc["cpu-hungry"].start_h == 2.0


def test_probes_see_the_queue_ahead_but_delay_no_one() -> None:
    t = onprem((Node("a-1", 8, 64, 512, idle=True),))
    jobs = [job("ahead", 8, 2.0), job("probe", 8, 5.0), job("behind", 8, 1.0)]
    fc = forecast_starts([t], jobs, probes=["probe"])
    assert fc["probe"].start_h == 2.0
    assert fc["behind"].start_h == 2.0


@settings(max_examples=60, deadline=None)
@given(
    free=st.integers(0, 8),
    releases=st.lists(st.tuples(st.floats(0.1, 10.0), st.integers(1, 4)), max_size=3),
    jobs=st.lists(st.tuples(st.integers(1, 8), st.floats(0.25, 6.0), st.integers(0, 2)), min_size=1, max_size=8),
)
def test_forecast_never_books_more_gpus_than_the_node_has(
    free: int, releases: list[tuple[float, int]], jobs: list[tuple[int, float, int]]
) -> None:
    total = free + sum(g for _, g in releases)
    if total > 8:
        return
    t = onprem((Node("a-1", free, 64, 512, idle=not releases and free == 8),),
               tuple(Release(at, "a-1", g, 0, 0) for at, g in releases))
    demands = [job(f"j{i}", g, rt, priority=p) for i, (g, rt, p) in enumerate(jobs)]
    fc = forecast_starts([t], demands)
    booked = [(fc[d.id].start_h, fc[d.id].start_h + d.runtime_h, d.gpus) for d in demands if fc[d.id].target]
    for s, _, _ in booked:
        in_use = sum(g for a, b, g in booked if a <= s < b)
        capacity = free + sum(g for at, g in releases if at <= s)
        assert in_use <= capacity
    for d in demands:
        # Whatever fits the node once everything is released gets a finite start.
        assert (fc[d.id].target is not None) == (d.gpus <= total)
