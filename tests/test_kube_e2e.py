"""End to end on real sockets: the loop and `spillover` CLI against two local Kubernetes API servers acting as
on-prem clusters, through the official client — dispatch, run, finish, cancel, crash and restart, a cluster
that goes away, and Prometheus stopping mid-run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from kube.apiserver import FakeKube
from spillover.scheduler.clock import RealClock
from spillover.scheduler.config import load_config
from spillover.scheduler.loop import ControlLoop
from spillover.scheduler.model import JobState
from spillover.scheduler.store import Store
from spillover.scheduler.wiring import build_providers

ROOT = Path(__file__).resolve().parents[1]
TIME_SCALE = 0.01  # a job estimated at 100 s runs 1 s on the test servers


@pytest.fixture
def clusters(tmp_path):
    kubes = {}
    kubeconfig = tmp_path / "kubeconfig"
    for name in ("site-a", "site-b"):
        k = FakeKube(time_scale=TIME_SCALE).start()
        for i in range(2):
            k.add_node(f"{name}-gpu-{i}", gpus=8, gpu_product="A100")
        k.write_kubeconfig(kubeconfig, context=name)
        kubes[name] = k
    yield kubes, kubeconfig
    for k in kubes.values():
        k.stop()


def write_config(tmp_path: Path, kubeconfig: Path, prometheus_url: str | None = None, **loop) -> Path:
    clusters = []
    for name in ("site-a", "site-b"):
        c = {"name": name, "kind": "onprem", "provider": "kubernetes",
             "node_groups": [{"count": 2, "gpus_per_node": 8, "gpu_type": "A100", "cpu_per_node": 96,
                              "memory_gib_per_node": 1024}],
             "kubernetes": {"kubeconfig": str(kubeconfig), "context": name, "request_timeout_s": 2}}
        if prometheus_url and name == "site-a":
            c["prometheus"] = {"url": prometheus_url, "timeout_s": 1}
        clusters.append(c)
    cfg = {"apiVersion": "spillover/v1alpha1", "kind": "SpilloverConfig",
           "store": {"url": f"sqlite:///{tmp_path / 'store.db'}"},
           "loop": {"interval_s": 0.2, "solver_time_limit_s": 1, "unavailable_after": 2, "requeue_grace_s": 1.0,
                    **loop},
           "queues": [{"name": "research"}], "clusters": clusters,
           "policy": {"value_of_time_per_gpu_hour": 4.0}}
    path = tmp_path / "spillover.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def jobs_file(tmp_path: Path, n: int, runtime_s: float, gpus: int = 4, prefix: str = "train") -> Path:
    docs = [{"apiVersion": "spillover/v1alpha1", "kind": "TrainingJob", "metadata": {"name": f"{prefix}-{i}"},
             "spec": {"queue": "research", "image": "img:1", "gpus": gpus, "estimatedRuntime": f"{runtime_s}s"}}
            for i in range(n)]
    path = tmp_path / f"{prefix}.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    return path


def spillover(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "spillover.scheduler.cli", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def drive(loop: ControlLoop, done, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        loop.run_cycle()
        if done():
            return
        time.sleep(loop.config.loop.interval_s)
    raise AssertionError("timed out")


def spillover_jobs(kube: FakeKube) -> dict[str, dict]:
    return {j["metadata"]["name"]: j for j in kube.objects("jobs")
            if j["metadata"].get("labels", {}).get("app.kubernetes.io/managed-by") == "spillover"}


def test_jobs_run_as_kubernetes_jobs_finish_and_can_be_cancelled(tmp_path, clusters):
    kubes, kubeconfig = clusters
    cfg_path = write_config(tmp_path, kubeconfig)
    assert spillover("submit", str(jobs_file(tmp_path, 6, runtime_s=100)), "-c", str(cfg_path)).returncode == 0
    config = load_config(cfg_path)
    store = Store(config.store.url)
    clock = RealClock()
    loop = ControlLoop(config, store, build_providers(config, clock), clock)
    drive(loop, lambda: all(j.state == JobState.SUCCEEDED for j in store.jobs()))
    for job in store.jobs():
        kjob = spillover_jobs(kubes[job.cluster])[job.id]
        assert kjob["metadata"]["namespace"] == "spillover-research"
        assert kjob["metadata"]["labels"]["spillover/job-id"] == job.id
        assert kjob["status"].get("succeeded") == 1
    # six 4-GPU jobs on two clusters of 16 GPUs: both clusters were used
    assert {j.cluster for j in store.jobs()} == {"site-a", "site-b"}
    listing = spillover("jobs", "-c", str(cfg_path))
    assert listing.stdout.count("succeeded") == 6

    assert spillover("submit", str(jobs_file(tmp_path, 1, runtime_s=100000, prefix="long")),
                     "-c", str(cfg_path)).returncode == 0
    drive(loop, lambda: store.job("long-0").state == JobState.RUNNING)
    long = store.job("long-0")
    assert long.id in spillover_jobs(kubes[long.cluster])
    assert spillover("cancel", long.id, "-c", str(cfg_path)).returncode == 0
    drive(loop, lambda: store.job(long.id).state == JobState.CANCELLED)
    assert long.id not in spillover_jobs(kubes[long.cluster])
    assert not [p for p in kubes[long.cluster].objects("pods") if long.id in p["metadata"]["name"]]


def _run(cfg: Path, **env: str) -> subprocess.Popen:
    e = dict(os.environ, PYTHONPATH=str(ROOT), **env)
    return subprocess.Popen([sys.executable, "-m", "spillover.scheduler.cli", "run", "-c", str(cfg)], env=e,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_killing_spillover_mid_dispatch_and_restarting_creates_no_duplicate_job(tmp_path, clusters):
    kubes, kubeconfig = clusters
    cfg_path = write_config(tmp_path, kubeconfig)
    assert spillover("submit", str(jobs_file(tmp_path, 6, runtime_s=150)), "-c", str(cfg_path)).returncode == 0
    for point in ("after-intent:1", "after-dispatch:1", "after-dispatch:2"):
        p = _run(cfg_path, SPILLOVER_CRASH_AT=point)
        assert p.wait(timeout=60) == -signal.SIGKILL, p.stderr.read().decode()[-2000:]
    final = _run(cfg_path)
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(j.state == JobState.SUCCEEDED for j in store.jobs()):
            time.sleep(0.3)
    finally:
        final.send_signal(signal.SIGINT)
        final.wait(timeout=30)
    jobs = store.jobs()
    assert {j.state for j in jobs} == {JobState.SUCCEEDED}
    names = [name for k in kubes.values() for name in spillover_jobs(k)]
    assert sorted(names) == sorted(j.id for j in jobs), "a job has a copy in two clusters, or none"
    creates = sum(k.requests[("POST", "jobs")] for k in kubes.values())
    assert creates >= len(jobs)  # retried creates after a crash were answered 409 and adopted


def test_a_cluster_whose_api_goes_away_has_its_jobs_requeued_after_the_grace_once(tmp_path, clusters):
    kubes, kubeconfig = clusters
    cfg_path = write_config(tmp_path, kubeconfig, requeue_grace_s=2.0)
    config = load_config(cfg_path)
    store = Store(config.store.url)
    clock = RealClock()
    loop = ControlLoop(config, store, build_providers(config, clock), clock)
    assert spillover("submit", str(jobs_file(tmp_path, 2, runtime_s=100000, gpus=8)), "-c",
                     str(cfg_path)).returncode == 0
    drive(loop, lambda: all(j.state == JobState.RUNNING for j in store.jobs()))
    victims = [j for j in store.jobs() if j.cluster == "site-a"]
    assert victims, "expected a job on site-a"
    kubes["site-a"].stop()
    t0 = time.monotonic()
    drive(loop, lambda: all(store.job(j.id).cluster == "site-b" for j in victims), timeout=30)
    assert time.monotonic() - t0 >= 2.0  # not before the grace
    assert not store.cluster_status("site-a").available
    kubes["site-a"].start()
    drive(loop, lambda: not spillover_jobs(kubes["site-a"]), timeout=30)  # the stale copies are removed
    for j in victims:
        assert [e.kind for e in store.events(j.id)].count("requeued") == 1
        assert j.id in spillover_jobs(kubes["site-b"])


def test_the_loop_keeps_placing_when_prometheus_stops(tmp_path, clusters, prometheus_server):
    kubes, kubeconfig = clusters
    cfg_path = write_config(tmp_path, kubeconfig, prometheus_url=prometheus_server.url)
    config = load_config(cfg_path)
    store = Store(config.store.url)
    clock = RealClock()
    loop = ControlLoop(config, store, build_providers(config, clock), clock)
    spillover("submit", str(jobs_file(tmp_path, 2, runtime_s=100, prefix="before")), "-c", str(cfg_path))
    drive(loop, lambda: all(j.state == JobState.SUCCEEDED for j in store.jobs()))
    prometheus_server.stop()
    spillover("submit", str(jobs_file(tmp_path, 4, runtime_s=100, prefix="after")), "-c", str(cfg_path))
    drive(loop, lambda: all(j.state == JobState.SUCCEEDED for j in store.jobs()))
    assert len(store.jobs()) == 6
    warnings = [e for e in store.events() if e.kind == "warning" and e.cluster == "site-a"]
    assert warnings, "a stopped Prometheus should be reported"
