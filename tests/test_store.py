"""The global queue store on SQLite and PostgreSQL: atomic submits, compare-and-set transitions, idempotent intents, the ledger."""

from __future__ import annotations

import pytest

from spillover.scheduler.errors import UnknownJobError
from spillover.scheduler.model import JobSpec, JobState
from spillover.scheduler.store import LedgerEntry, Store


def spec(name="train", queue="research", gpus=1, **kw) -> JobSpec:
    return JobSpec(name=name, queue=queue, image="img:1", gpus=gpus, estimated_runtime_s=3600, **kw)


def test_submit_stores_jobs_with_a_submitted_event(store_url):
    store = Store(store_url)
    jobs = store.submit([spec("a"), spec("b", gpus=4, nodes=2)], now=100.0, teams={"research": "ml"})
    assert [j.state for j in jobs] == [JobState.PENDING, JobState.PENDING]
    b = store.job("b")
    assert b.gpus == 8 and b.team == "ml" and b.spec.nodes == 2
    assert [e.kind for e in store.events(b.id)] == ["submitted"]


def test_submit_is_all_or_nothing(store_url):
    store = Store(store_url)
    store.submit([spec("a")], now=1.0, ids=["a-1"])
    with pytest.raises(Exception):
        store.submit([spec("b"), spec("a")], now=2.0, ids=["b-1", "a-1"])  # second id collides
    assert [j.id for j in store.jobs()] == ["a-1"]


def test_job_lookup_by_name_takes_the_newest_and_unknown_is_a_user_error(store_url):
    store = Store(store_url)
    store.submit([spec("a")], now=1.0, ids=["a-old"])
    store.submit([spec("a")], now=2.0, ids=["a-new"])
    assert store.job("a").id == "a-new"
    assert store.job("a-old").id == "a-old"
    with pytest.raises(UnknownJobError, match="unknown job 'nope'"):
        store.job("nope")


def test_transition_is_compare_and_set(store_url):
    store = Store(store_url)
    (job,) = store.submit([spec()], now=1.0)
    assert store.transition(job.id, [JobState.PENDING], JobState.CANCELLED, now=2.0, message="user")
    # a loop that still believes the job is pending cannot dispatch it any more
    assert not store.transition(job.id, [JobState.PENDING], JobState.DISPATCHING, now=3.0, message="loop")
    assert store.job(job.id).state == JobState.CANCELLED
    assert [(e.from_state, e.to_state) for e in store.events(job.id)][-1] == ("pending", "cancelled")


def test_intent_keys_are_idempotent_and_open_until_finished(store_url):
    store = Store(store_url)
    assert store.intend("dispatch", "dispatch:j:1", cluster="c", job_id="j", now=1.0, payload={"nodes": ["n1"]})
    assert not store.intend("dispatch", "dispatch:j:1", cluster="c", job_id="j", now=2.0)
    (a,) = store.open_actions()
    assert a.key == "dispatch:j:1" and a.payload == {"nodes": ["n1"]}
    store.finish_action("dispatch:j:1", now=3.0)
    assert store.open_actions() == []


def test_ledger_accrues_per_hour_bucket_and_moves_the_mark_atomically(store_url):
    store = Store(store_url)
    e = LedgerEntry(bucket=0.0, cluster="aws", cloud="aws", node="n1", node_hours=0.5, gpu_hours=4.0, usd=10.0,
                    job_id="j", queue="research", team="ml")
    store.accrue("aws", 1800.0, [e])
    store.accrue("aws", 3600.0, [e])  # same bucket, node and job: one row, summed
    assert store.cluster_status("aws").accrued_until == 3600.0
    assert store.ledger_totals("cloud") == [("aws", 1.0, 8.0, 20.0)]
    assert store.ledger_totals("team") == [("ml", 1.0, 8.0, 20.0)]
