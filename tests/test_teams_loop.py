"""Teams in the real loop on simulated clusters: budgets held to in every period, quotas, fair share, preemption."""

from __future__ import annotations

from spillover.scheduler.model import JobSpec, JobState


def spec(name: str, queue: str = "research", gpus: int = 8, hours: float = 1.0, **kw) -> JobSpec:
    return JobSpec(name=name, queue=queue, image="img:1", gpus=gpus, estimated_runtime_s=hours * 3600, **kw)


def teams(config) -> dict[str, str]:
    return {q.name: q.team for q in config.queues}


def cycles(loop, clock, n: int, step: float = 60.0):
    for _ in range(n):
        clock.advance(step)
        loop.run_cycle()


def cloud_spend(store, team: str) -> float:
    return sum(usd for t, _q, cloud, usd in store.ledger_groups(0, 1e12) if t == team and cloud != "onprem")


def test_a_team_over_its_budget_never_bursts_and_says_why(world, clock):
    config, store, providers, loop = world(teams=[{"name": "ml", "budget": {"usd": 50, "period": "month"}}])
    store.submit([spec("fill-1", "prod", hours=50), spec("fill-2", "prod", hours=50)], now=clock.now(), teams=teams(config))
    loop.run_cycle()
    jobs = store.submit([spec(f"ml-{i}", hours=1) for i in range(4)] + [spec("other", "prod", hours=1)],
                        now=clock.now(), teams=teams(config))
    cycles(loop, clock, 60)
    ml = [store.job(j.id) for j in jobs[:4]]
    burst = [j for j in ml if j.cluster == "aws"]
    waiting = [j for j in ml if j.state == JobState.PENDING]
    assert burst and waiting, [(j.name, j.state, j.cluster, j.reason) for j in ml]
    for j in waiting:
        assert "budget team:ml" in j.reason and "wait" in j.reason, [(j.name, j.state, j.cluster, j.reason) for j in ml]
    assert store.job(jobs[4].id).cluster == "aws"  # the team with no budget bursts as before
    cycles(loop, clock, 120)
    loop.flush()
    assert 0 < cloud_spend(store, "ml") <= 50.0
    kinds = {e.kind for e in store.events()}
    assert "budget-exhausted" in kinds or "budget-warning" in kinds
