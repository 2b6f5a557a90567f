"""Several `spillover run` processes on one store: one leads, the others follow; the leader is SIGKILLed again and
again and every job still finishes exactly once; a deposed leader's writes are refused (fencing)."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import psycopg
import pytest
import yaml

from spillover.scheduler.leader import Fenced, PostgresLeader
from spillover.scheduler.model import JobState
from spillover.scheduler.records import Batch, NewEvent
from spillover.scheduler.store import Store

SPILLOVER = [sys.executable, "-m", "spillover.scheduler.cli"]
FIRST_CYCLE = re.compile(r"^(\S+ \S+) INFO spillover\.leader: leading at epoch (\d+): first cycle done")
STOPPED = re.compile(r"^(\S+ \S+) WARNING spillover\.leader: stopped leading at epoch (\d+): (.*)$")


def _config(tmp: Path, url: str, *, onprem_nodes: int = 4, cloud_nodes: int = 3) -> Path:
    cfg = {
        "apiVersion": "spillover/v1alpha1", "kind": "SpilloverConfig",
        "store": {"url": url},
        "loop": {"interval_s": 0.2, "solver_time_limit_s": 1},
        "queues": [{"name": "research"}],
        "clusters": [
            {"name": "onprem", "kind": "onprem", "provider": "simulated",
             "node_groups": [{"count": onprem_nodes, "gpus_per_node": 8, "gpu_type": "A100", "cpu_per_node": 96,
                              "memory_gib_per_node": 1024}]},
            {"name": "aws", "kind": "cloud", "provider": "simulated", "cloud": "aws", "region": "us-east-1",
             "pools": [{"name": "p4d", "instance_type": "p4d.24xlarge", "min_nodes": 0, "max_nodes": cloud_nodes,
                        "provisioning_delay_s": 0.5}]},
        ],
        # waiting is worth a lot, so the queue bursts too and both clusters see dispatches
        "policy": {"value_of_time_per_gpu_hour": 500.0, "scale_down_idle_s": 1, "max_cloud_gpus": 8 * cloud_nodes},
    }
    path = tmp / "spillover.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _jobs_file(tmp: Path, n: int, runtimes: tuple[int, ...]) -> Path:
    docs = [{"apiVersion": "spillover/v1alpha1", "kind": "TrainingJob", "metadata": {"name": f"job-{i:03d}"},
             "spec": {"queue": "research", "image": "img:1", "gpus": [1, 2, 4, 8][i % 4],
                      "estimatedRuntime": f"{runtimes[i % len(runtimes)]}s"}} for i in range(n)]
    path = tmp / "jobs.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    return path


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    return env


class Replica:
    """One `spillover run` process, its stderr in a file (read as its log)."""

    def __init__(self, cfg: Path, tmp: Path, n: int, *extra: str) -> None:
        self.log = tmp / f"run-{n:02d}.log"
        with self.log.open("wb") as f:
            self.proc = subprocess.Popen([*SPILLOVER, "run", "-c", str(cfg), "--state-dir", str(tmp / "sim"),
                                          "--lock-poll-s", "0.5", *extra],
                                         env=_env(), stdout=subprocess.DEVNULL, stderr=f, cwd=tmp)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def following(self) -> bool:
        return "following: leader is" in self.text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)


def _leader(store: Store) -> tuple[int, str, float] | None:
    with store.engine.connect() as conn:
        row = conn.exec_driver_sql("SELECT epoch, holder, acquired_at FROM leadership WHERE name = 'loop'").first()
    return None if row is None else (int(row[0]), row[1], float(row[2]))


def _wait(what, timeout: float, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = what()
        if got:
            return got
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {getattr(what, '__name__', what)}")


def _stamp(asctime: str) -> float:
    """A log line's time (the CLI logs local time to the millisecond) as seconds since the epoch."""
    return datetime.strptime(asctime, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def _first_cycles(replicas: list[Replica]) -> dict[int, float]:
    """epoch -> when the leader at that epoch finished its first cycle, from every replica's log."""
    out = {}
    for r in replicas:
        for line in r.text().splitlines():
            m = FIRST_CYCLE.match(line)
            if m:
                out[int(m.group(2))] = _stamp(m.group(1))
    return out


def _sim_state(tmp: Path) -> dict[str, dict]:
    return {f.stem: json.loads(f.read_text()) for f in (tmp / "sim").glob("*.json")}


def _submit(cfg: Path, jobs: Path) -> None:
    subprocess.run([*SPILLOVER, "submit", str(jobs), "-c", str(cfg)], env=_env(), check=True, capture_output=True)


def _assert_each_job_ran_once(store: Store, tmp: Path, n: int) -> None:
    jobs = store.jobs()
    assert len(jobs) == n
    assert Counter(j.state for j in jobs) == {JobState.SUCCEEDED: n}, Counter(j.state for j in jobs)
    sim = _sim_state(tmp)
    created = Counter(jid for s in sim.values() for jid in s["created"])
    # a job is created on a cluster once per dispatch attempt, never more: no failover repeated a creation
    assert {j.id: created[j.id] for j in jobs} == {j.id: j.attempts for j in jobs}
    # and never two live copies: each job is on one cluster at the end, once
    copies = Counter(job["job_id"] for s in sim.values() for job in s["jobs"])
    assert max(copies.values(), default=1) == 1
    dispatches = [a for a in store.actions() if a.kind == "dispatch"]
    assert len(dispatches) == len({a.key for a in dispatches}) == sum(j.attempts for j in jobs)
    assert store.open_actions() == []


@pytest.mark.postgres
def test_leader_sigkilled_30_times_every_job_finishes_exactly_once(pg_url, tmp_path):
    n_jobs, kills_wanted = 300, 30
    cfg = _config(tmp_path, pg_url)
    _submit(cfg, _jobs_file(tmp_path, n_jobs, runtimes=(2, 3, 4, 5)))
    store = Store(pg_url)
    started = time.monotonic()
    replicas = [Replica(cfg, tmp_path, 0), Replica(cfg, tmp_path, 1)]
    rng = random.Random(5)
    kill_at: dict[int, float] = {}  # epoch of the killed leader -> when
    killed: list[Replica] = []
    try:
        for i in range(kills_wanted):
            # a leader that has cycled at least once, and a follower ready to take over
            epoch, holder, _ = _wait(lambda: (lead := _leader(store)) and lead[0] in _first_cycles(replicas)
                                     and lead, 30)
            pid = int(holder.rsplit(":", 1)[1])
            leader = next(r for r in replicas if r.pid == pid)
            follower = next(r for r in replicas if r is not leader)
            _wait(follower.following, 30)
            time.sleep(rng.uniform(0.1, 0.8))  # anywhere in a cycle: observing, solving, between intent and act
            kill_at[epoch] = time.time()
            os.kill(pid, signal.SIGKILL)
            leader.proc.wait(timeout=10)
            replicas.remove(leader)
            killed.append(leader)
            replicas.append(Replica(cfg, tmp_path, i + 2))  # as a supervisor restarts it
        _wait(lambda: kills_wanted + 1 in _first_cycles(replicas), 30)  # the last failover is measured too
        _wait(lambda: all(j.state.terminal for j in store.jobs()), 120, step=0.3)
        done_at = time.monotonic()
    finally:
        for r in replicas:
            r.stop()
    first = _first_cycles(replicas + killed)
    failovers = [first[e + 1] - t for e, t in kill_at.items() if e + 1 in first]
    print(f"\n{len(kill_at)} SIGKILLs of the leader over {done_at - started:.0f}s; failover (SIGKILL to the "
          f"new leader's first cycle done) median {statistics.median(failovers):.2f}s, max {max(failovers):.2f}s")
    assert len(kill_at) == kills_wanted and len(failovers) == kills_wanted
    _assert_each_job_ran_once(store, tmp_path, n_jobs)
    epoch, _, _ = _leader(store)
    assert epoch == kills_wanted + 1  # one leader at a time: every lead began with one epoch



def _terminate_lock_session(url: str, holder: str) -> int:
    """Cut a leader's lock connection from the server's side, as a network failure or an operator would."""
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        rows = conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                            (f"spillover-leader {holder}",)).fetchall()
    return len(rows)


def _event(message: str) -> NewEvent:
    return NewEvent(at=time.time(), kind="note", message=message)


@pytest.mark.postgres
def test_a_deposed_leaders_writes_are_fenced_and_write_nothing(pg_url):
    store_a, store_b, user = Store(pg_url), Store(pg_url), Store(pg_url)
    a, b = PostgresLeader(store_a, holder="replica-a"), PostgresLeader(store_b, holder="replica-b")
    try:
        assert a.try_acquire() == 1
        assert b.try_acquire() is None  # the lock is held
        store_a.apply(Batch(events=[_event("a leads")]))
        assert a.lost() is None

        assert _terminate_lock_session(pg_url, "replica-a") == 1
        assert _wait(b.try_acquire, 5) == 2  # as soon as the server has ended a's session
        # replica a has not looked yet and still believes it leads: its writes are refused, and write nothing
        before = len(user.events())
        with pytest.raises(Fenced, match="newer leader holds epoch 2"):
            store_a.apply(Batch(events=[_event("a, deposed")]))
        with pytest.raises(Fenced):
            store_a.record_event("note", "a, deposed", now=time.time())
        assert len(user.events()) == before
        assert "lock connection" in (a.lost() or "")

        # the new leader writes; users' writes are never fenced, wherever they come from
        store_b.apply(Batch(events=[_event("b leads")]))
        spec = {"name": "j", "queue": "research", "image": "img:1", "gpus": 1, "estimated_runtime_s": 60}
        from spillover.scheduler.model import JobSpec

        job, = user.submit([JobSpec(**spec)], now=time.time())
        assert user.transition(job.id, [JobState.PENDING], JobState.CANCELLED, now=time.time(), message="by user")
        assert [e.message for e in user.events()][-1] == "by user"
        assert _leader(user)[:2] == (2, "replica-b")
    finally:
        a.release()
        b.release()


@pytest.mark.postgres
def test_a_leader_whose_lock_connection_is_cut_stops_within_a_cycle_and_a_follower_takes_over(pg_url, tmp_path):
    cfg = _config(tmp_path, pg_url)
    n_jobs = 16
    _submit(cfg, _jobs_file(tmp_path, n_jobs, runtimes=(1, 2)))
    store = Store(pg_url)
    first, second = Replica(cfg, tmp_path, 0), Replica(cfg, tmp_path, 1)
    replicas = [first, second]
    try:
        _, holder, _ = _wait(lambda: (lead := _leader(store)) and 1 in _first_cycles(replicas) and lead, 30)
        leader = next(r for r in replicas if holder.endswith(f":{r.pid}"))
        follower = next(r for r in replicas if r is not leader)
        _wait(follower.following, 30)
        cut = time.time()
        assert _terminate_lock_session(pg_url, holder) == 1
        stopped = _wait(lambda: [m for line in leader.text().splitlines() if (m := STOPPED.match(line))], 10)
        assert stopped[0].group(2) == "1" and "lock connection" in stopped[0].group(3)
        # it noticed before its next cycle: within one cycle (0.2 s apart, a solve of up to 1 s)
        assert _stamp(stopped[0].group(1)) - cut < 1.5
        epoch, new_holder, _ = _wait(lambda: (lead := _leader(store)) and lead[0] == 2 and lead, 10)
        assert new_holder.endswith(f":{follower.pid}")
        _wait(leader.following, 10)  # and the old leader follows again, in the same process
        assert leader.proc.poll() is None
        _wait(lambda: all(j.state.terminal for j in store.jobs()), 60, step=0.3)
    finally:
        for r in replicas:
            r.stop()
    _assert_each_job_ran_once(store, tmp_path, n_jobs)
    assert _leader(store)[0] == 2


def test_a_second_run_on_the_same_sqlite_store_follows_and_does_not_act(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    cfg = _config(tmp_path, url, onprem_nodes=2, cloud_nodes=1)
    store = Store(url)
    first, second = Replica(cfg, tmp_path, 0), None
    try:
        _wait(lambda: (lead := _leader(store)) and lead[1].endswith(f":{first.pid}"), 30)
        second = Replica(cfg, tmp_path, 1)
        _wait(second.following, 30)
        n_jobs = 8
        _submit(cfg, _jobs_file(tmp_path, n_jobs, runtimes=(1,)))
        _wait(lambda: all(j.state.terminal for j in store.jobs()), 60, step=0.3)
        assert "leading at" not in second.text()
        epoch, holder, _ = _leader(store)
        assert epoch == 1 and holder.endswith(f":{first.pid}")
        # a one-off cycle does not wait for its turn: it says who leads, on one line
        once = subprocess.run([*SPILLOVER, "run", "--once", "-c", str(cfg), "--state-dir", str(tmp_path / "sim")],
                              env=_env(), capture_output=True, text=True, cwd=tmp_path, timeout=60)
        assert once.returncode == 1
        assert once.stderr.strip().splitlines()[-1].startswith("error: another loop leads: ")
        assert f":{first.pid} since" in once.stderr and "Traceback" not in once.stderr
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(timeout=10)
        _wait(lambda: (lead := _leader(store)) and lead[0] == 2 and lead[1].endswith(f":{second.pid}"), 10)
        _wait(lambda: 2 in _first_cycles([second]), 10)
    finally:
        for r in (first, second):
            if r is not None:
                r.stop()
    _assert_each_job_ran_once(store, tmp_path, n_jobs)


def test_sigterm_stops_the_leader_cleanly_and_a_follower_takes_over_at_once(tmp_path):
    """Kubernetes stops a pod with SIGTERM: the loop stops as on Ctrl-C (exit 0, lock let go), not killed."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    cfg = _config(tmp_path, url, onprem_nodes=2, cloud_nodes=1)
    store = Store(url)
    first, second = Replica(cfg, tmp_path, 0), None
    try:
        _wait(lambda: (lead := _leader(store)) and lead[1].endswith(f":{first.pid}"), 30)
        second = Replica(cfg, tmp_path, 1)
        _wait(second.following, 30)
        first.proc.send_signal(signal.SIGTERM)
        assert first.proc.wait(timeout=20) == 0, first.text()
        assert "Traceback" not in first.text()
        _wait(lambda: (lead := _leader(store)) and lead[0] == 2 and lead[1].endswith(f":{second.pid}"), 10)
    finally:
        for r in (first, second):
            if r is not None:
                r.stop()
