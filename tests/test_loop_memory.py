"""The loop works from memory and journals to the store: a steady cycle writes nothing, a cancel by another process
wins over the loop's own plan, and a restart remembers what health the loop had learnt (jobs stuck in a cluster,
interruptions, pools short of nodes, nodes lost under running jobs)."""

from __future__ import annotations

import sqlite3

import pytest

from conftest import make_config
from spillover.placement import solve
from spillover.providers.contract import DispatchRequest
from spillover.scheduler.loop import ControlLoop
from spillover.scheduler.model import JobSpec, JobState
from spillover.scheduler.store import Store
from spillover.scheduler.wiring import build_providers


def spec(name: str, gpus: int = 8, hours: float = 1.0, **kw) -> JobSpec:
    return JobSpec(name=name, queue="research", image="img:1", gpus=gpus, estimated_runtime_s=hours * 3600, **kw)


def cycles(loop, clock, n: int, step: float = 30.0) -> None:
    for _ in range(n):
        clock.advance(step)
        loop.run_cycle()


def _data_version(path) -> int:
    """SQLite's count of commits by other connections, as this new connection sees them."""
    with sqlite3.connect(path) as c:
        return c.execute("PRAGMA data_version").fetchone()[0]


def test_a_steady_cycle_writes_nothing_and_reads_only_the_newest_events(clock, tmp_path):
    db = tmp_path / "s.db"
    config = make_config(policy={"value_of_time_per_gpu_hour": 0.01})  # waiting is cheap: the queue stays
    store = Store(f"sqlite:///{db}")
    providers = build_providers(config, clock)
    loop = ControlLoop(config, store, providers, clock)
    store.submit([spec("fill-1", hours=10), spec("fill-2", hours=10), spec("waits", hours=2)], now=clock.now())
    cycles(loop, clock, 3)
    assert store.job("waits").state == JobState.PENDING and store.job("fill-1").state == JobState.RUNNING
    statements: list[str] = []
    store._conn.connection.dbapi_connection.set_trace_callback(statements.append)
    watcher = sqlite3.connect(db)  # PRAGMA data_version moves when any other connection commits
    before = watcher.execute("PRAGMA data_version").fetchone()[0]
    reports = []
    for _ in range(5):
        clock.advance(30)
        reports.append(loop.run_cycle())
    assert watcher.execute("PRAGMA data_version").fetchone()[0] == before
    assert [r.commits for r in reports] == [0] * 5
    reads = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(reads) == 5 and all("FROM events" in s for s in reads), statements
    assert not [s for s in statements if s.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))]


def test_a_cancel_by_another_process_wins_over_the_plan_that_would_dispatch_the_job(world, clock, sqlite_url):
    config, store, providers, _ = world()
    (job,) = store.submit([spec("victim", gpus=4)], now=clock.now())
    other = Store(sqlite_url)  # e.g. `spillover cancel`, in its own process

    def solve_while_a_user_cancels(problem):
        plan = solve(problem)
        assert other.transition(job.id, [JobState.PENDING], JobState.CANCELLED, now=clock.now(),
                                message="cancelled by user", finished_at=clock.now())
        return plan

    loop = ControlLoop(config, store, providers, clock, solver=solve_while_a_user_cancels)
    report = loop.run_cycle()
    assert report.started == 1  # the plan did place it ...
    assert providers["onprem"].created == []  # ... but it was never dispatched
    assert store.job(job.id).state == JobState.CANCELLED
    assert [a for a in store.actions(job.id)] == []  # nor was its intent written
    assert loop.state.get(job.id) is None
    loop.run_cycle()
    assert providers["onprem"].created == []


def test_a_restart_still_keeps_a_job_away_from_the_cluster_it_was_stuck_in(clock, sqlite_url):
    config = make_config(loop={"unschedulable_grace_s": 300}, policy={"value_of_time_per_gpu_hour": 0.01})
    providers = build_providers(config, clock)
    loop = ControlLoop(config, Store(sqlite_url), providers, clock)
    store = Store(sqlite_url)
    (job,) = store.submit([spec("stuck", gpus=4)], now=clock.now())
    loop.run_cycle()
    onprem = providers["onprem"]
    for n in onprem.observe().nodes:
        onprem.cordon(n.name)
    onprem.cancel(job.id, "test")
    onprem.dispatch(DispatchRequest(job_id=job.id, request_id="again", spec=job.spec))
    cycles(loop, clock, 12)
    assert any("unschedulable on onprem" in e.message for e in store.events(job.id))
    for n in onprem.observe().nodes:  # the nodes come back, but the job must not go there for an hour
        onprem._cordoned.discard(n.name)
    restarted = ControlLoop(config, Store(sqlite_url), providers, clock)
    cycles(restarted, clock, 3)
    assert store.job(job.id).cluster != "onprem"
    assert "onprem" in dict(store.job(job.id).avoid)


def test_a_restart_remembers_how_often_a_job_was_interrupted(clock, sqlite_url):
    import copy

    from conftest import BASE_CONFIG
    clusters = copy.deepcopy(BASE_CONFIG["clusters"])
    clusters[1]["pools"][0].update(spot=True, provisioning_delay_s=0)
    config = make_config(clusters=clusters, policy={"spot_for_non_checkpointable": True})
    providers = build_providers(config, clock)
    store = Store(sqlite_url)
    store.submit([spec("fill-1", hours=50), spec("fill-2", hours=50)], now=clock.now())
    (job,) = store.submit([spec("ckpt", hours=5, checkpointable=True)], now=clock.now())
    aws = providers["aws"]
    for lost in range(1, 6):
        # a new process each time: nothing of the count lives only in memory
        loop = ControlLoop(config, Store(sqlite_url), providers, clock)
        cycles(loop, clock, 3)
        assert store.job(job.id).state == JobState.RUNNING and store.job(job.id).pool == "p4d"
        [node] = [n.name for n in aws.observe().nodes if n.jobs]
        aws.reclaim(node)
        clock.advance(3600 * 2)  # outside the pool's interruption window: it is not backed off
        loop.run_cycle()
        assert store.job(job.id).interruptions == min(lost, 4)
    assert store.job(job.id).state == JobState.FAILED  # the fifth interruption fails it, across five processes


def test_a_restart_keeps_the_provisioning_clock_of_a_pool_short_of_nodes(clock, sqlite_url):
    import copy

    from conftest import BASE_CONFIG
    only_aws = copy.deepcopy(BASE_CONFIG["clusters"])
    only_aws[1]["pools"][0].update(provisioning_delay_s=7200, provisioning_timeout_s=900)
    config = make_config(clusters=only_aws, policy={"value_of_time_per_gpu_hour": 40.0})
    providers = build_providers(config, clock)
    store = Store(sqlite_url)
    store.submit([spec("fill-1", hours=50), spec("fill-2", hours=50)], now=clock.now())
    (job,) = store.submit([spec("b", hours=3)], now=clock.now())
    loop = ControlLoop(config, Store(sqlite_url), providers, clock)
    cycles(loop, clock, 2)
    assert store.job(job.id).pool == "p4d"
    cycles(loop, clock, 18)  # 600 s into the 900 s timeout ...
    restarted = ControlLoop(config, Store(sqlite_url), providers, clock)  # ... the process restarts
    cycles(restarted, clock, 12)  # 900 s after the loop saw the pool short of nodes, 360 s after the restart
    assert store.job(job.id).state == JobState.PENDING
    assert any("provisioning timeout" in e.message for e in store.events(job.id))


def test_a_restart_remembers_the_nodes_a_pool_lost_under_running_jobs(clock, sqlite_url):
    import copy

    from conftest import BASE_CONFIG
    clusters = copy.deepcopy(BASE_CONFIG["clusters"])
    clusters[1]["pools"][0].update(spot=True, provisioning_delay_s=0)
    config = make_config(clusters=clusters)
    providers = build_providers(config, clock)
    store = Store(sqlite_url)
    store.submit([spec("fill-1", hours=50), spec("fill-2", hours=50)], now=clock.now())
    (job,) = store.submit([spec("ckpt", hours=5, checkpointable=True)], now=clock.now())
    aws = providers["aws"]
    for lost in range(3):
        loop = ControlLoop(config, Store(sqlite_url), providers, clock)  # a restart before each loss
        cycles(loop, clock, 2)
        [node] = [n.name for n in aws.observe().nodes if n.jobs]
        aws.reclaim(node)
        loop.run_cycle()
    pool = store.pool_status("aws/p4d")
    assert pool.cooloff_until is not None and pool.cooloff_until > clock.now()
    assert any("lost 3 nodes" in e.message for e in store.events() if e.kind == "pool")


def _bill(tmp_path, restart_every: int | None) -> tuple[dict[str, float], dict[str, float], Store]:
    from spillover.scheduler.clock import SimClock
    from spillover.scheduler.costs import cost_report

    clock = SimClock()
    url = f"sqlite:///{tmp_path / f'bill-{restart_every}.db'}"
    config = make_config()
    providers = build_providers(config, clock)
    store = Store(url)
    store.submit([spec("fill-1", hours=3), spec("fill-2", hours=3)], now=clock.now(), ids=["fill-1", "fill-2"])
    store.submit([spec(f"b-{i}", hours=1 + i) for i in range(3)], now=clock.now() + 1, ids=["b-0", "b-1", "b-2"])
    loop = ControlLoop(config, Store(url), providers, clock)
    for i in range(1, 700):
        clock.advance(30)
        loop.run_cycle()
        if restart_every and i % restart_every == 0:
            loop = ControlLoop(config, Store(url), providers, clock)  # as if killed: nothing flushed
    loop.flush()
    assert {j.state for j in store.jobs()} == {JobState.SUCCEEDED}
    by_cloud = {r.key: r.usd for r in cost_report(store, "cloud")}
    by_job = {r.key: r.gpu_hours for r in cost_report(store, "job", include_idle=False)}
    return by_cloud, by_job, store


def test_the_ledger_charges_the_same_with_or_without_restarts(tmp_path):
    """A restart charges node time from the marks the store kept: the bill matches a run that never stopped."""
    cloud, jobs, store = _bill(tmp_path, None)
    cloud_r, jobs_r, _ = _bill(tmp_path, 7)
    for j in store.jobs():  # what each job ran is in the ledger exactly
        assert jobs[j.id] == pytest.approx(j.gpus * (j.finished_at - j.started_at) / 3600, rel=1e-6)
    assert cloud["aws"] > sum(jobs[f"b-{i}"] for i in range(3)) / 8 * 21.9  # boot and idle time billed too
    assert cloud_r == pytest.approx(cloud, rel=1e-9)
    assert jobs_r == pytest.approx(jobs, rel=1e-9)
