"""Benchmark of the Kubernetes provider's observe() on a large cluster served by the fake API server.

Builds 1,000 GPU nodes and 5,000 running pods (some of them Spillover Jobs) in a fake API server running in
its own process (so its JSON work does not share the provider's interpreter lock, as a real API server would
not), then reports the first observe (the caches' initial lists), steady-state observes (median of N), the
API requests each costs, how soon a new Job shows, and what one full list per observe would cost instead.

    .venv/bin/python -m spillover.simulations.bench_observe [--nodes 1000] [--pods 5000] [--jobs 200] [--repeats 10]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from kubernetes import client as k8s

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from spillover.providers.contract import DispatchRequest  # noqa: E402
from spillover.providers.kube_objects import job_record, node_record, pod_record  # noqa: E402
from spillover.providers.kubernetes import KubernetesProvider, KubeSettings  # noqa: E402
from spillover.scheduler.model import JobSpec  # noqa: E402

GPU_TYPES = ("A100", "H100", "L40S")
FOREVER_S = 3e7  # longer than the benchmark, within what a job spec allows
TOKEN = "bench-token"
UNFINISHED = "status.phase!=Succeeded,status.phase!=Failed"
OURS = "app.kubernetes.io/managed-by=spillover"


def job_spec(i: int) -> JobSpec:
    return JobSpec(name=f"train-{i:04d}", queue=("research", "prod")[i % 2], image="ghcr.io/acme/train:1",
                   gpus=1, cpu=4, memory_gib=32, estimated_runtime_s=FOREVER_S)


# ---- the server process ---------------------------------------------------------------------------


def build_cluster(kube: Any, nodes: int, pods: int, jobs: int) -> None:
    for i in range(nodes):
        kube.add_node(f"gpu-{i:04d}", gpus=8, gpu_product=GPU_TYPES[i % len(GPU_TYPES)],
                      labels={"spillover.dev/pool": f"rack-{i // 40:02d}"})
    api = k8s.CoreV1Api(kube.api_client())
    api.create_namespace({"metadata": {"name": "others"}})

    def other_pod(i: int) -> None:
        # bound straight to a node, as a DaemonSet's or another scheduler's pods are
        api.create_namespaced_pod("others", {
            "metadata": {"name": f"svc-{i:05d}", "annotations": {"spillover/estimated-runtime-s": str(FOREVER_S)}},
            "spec": {"nodeName": f"gpu-{i % nodes:04d}", "restartPolicy": "Never", "containers": [{
                "name": "app", "image": "registry.local/serve:1", "resources": {
                    "requests": {"cpu": "2", "memory": "16Gi", "nvidia.com/gpu": "1"},
                    "limits": {"nvidia.com/gpu": "1"}}}]}})

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(other_pod, range(pods - jobs)))
    with KubernetesProvider("bench", KubeSettings(), api_client=kube.api_client()) as provider:
        for i in range(jobs):
            provider.dispatch(DispatchRequest(job_id=f"train-{i:04d}", request_id=f"bench-{i}", spec=job_spec(i)))


def wait_running(kube: Any, pods: int, timeout: float = 900.0) -> None:
    end = time.monotonic() + timeout
    running = 0
    while time.monotonic() < end:
        running = sum(1 for p in kube.objects("pods") if (p.get("status") or {}).get("phase") == "Running")
        if running >= pods:
            return
        time.sleep(1.0)
    raise RuntimeError(f"only {running} of {pods} pods running after {timeout:.0f}s")


def server(conn: Connection, nodes: int, pods: int, jobs: int) -> None:
    """Child process: build the cluster, then answer "requests" (API requests served so far) until "stop"."""
    from kube.apiserver import FakeKube

    kube = FakeKube(time_scale=1.0, token=TOKEN).start()
    try:
        t0 = time.perf_counter()
        build_cluster(kube, nodes, pods, jobs)
        wait_running(kube, pods)
        kube.settle()
        conn.send(("ready", kube.url, time.perf_counter() - t0))
        while True:
            command = conn.recv()
            if command == "requests":
                conn.send(sum(kube.requests.values()))
            else:
                break
    finally:
        kube.close()


# ---- the measuring process ------------------------------------------------------------------------


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def list_raw(api: k8s.ApiClient, settings: KubeSettings) -> int:
    """What a provider that lists everything on every observe would pay: paged raw lists, slim records."""
    core, batch = k8s.CoreV1Api(api), k8s.BatchV1Api(api)
    calls = [(core.list_node, {}, lambda o: node_record(o, settings, {})),
             (core.list_pod_for_all_namespaces, {"field_selector": UNFINISHED}, lambda o: pod_record(o, settings)),
             (core.list_pod_for_all_namespaces, {"label_selector": OURS}, lambda o: pod_record(o, settings)),
             (batch.list_job_for_all_namespaces, {"label_selector": OURS}, lambda o: job_record(o, settings))]
    n = 0
    for call, selectors, extract in calls:
        token = None
        while True:
            kw = dict(selectors, limit=500, **({"_continue": token} if token else {}))
            resp = call(**kw, _preload_content=False)
            data = json.loads(resp.data)
            resp.release_conn()
            for obj in data["items"]:
                extract(obj)
                n += 1
            token = data["metadata"].get("continue")
            if not token:
                break
    return n


def list_models(api: k8s.ApiClient) -> int:
    """The same lists deserialized into the client's models, as most client code does."""
    core, batch = k8s.CoreV1Api(api), k8s.BatchV1Api(api)
    return (len(core.list_node().items) + len(core.list_pod_for_all_namespaces(field_selector=UNFINISHED).items)
            + len(core.list_pod_for_all_namespaces(label_selector=OURS).items)
            + len(batch.list_job_for_all_namespaces(label_selector=OURS).items))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--pods", type=int, default=5000, help="running pods in all, Spillover's included")
    parser.add_argument("--jobs", type=int, default=200, help="how many of the pods are Spillover Jobs")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)

    ours, theirs = mp.Pipe()
    child = mp.get_context("fork").Process(target=server, daemon=True,
                                           args=(theirs, args.nodes, args.pods, args.jobs))
    child.start()

    def served() -> int:
        ours.send("requests")
        return int(ours.recv())

    try:
        _, url, t_setup = ours.recv()
        print(f"cluster: {args.nodes} nodes, {args.pods} running pods ({args.jobs} Spillover Jobs); "
              f"built in {t_setup:.1f}s")

        def api_client() -> k8s.ApiClient:
            return k8s.ApiClient(k8s.Configuration(host=url, api_key={"authorization": f"Bearer {TOKEN}"}))

        settings = KubeSettings(request_timeout_s=30.0)
        # the first large list after the build is slow on both sides (allocator, first serializations);
        # one throwaway list keeps that out of the comparison below
        t_warm, _ = timed(lambda: list_raw(api_client(), settings))
        with KubernetesProvider("bench", settings, api_client=api_client()) as provider:
            before = served()
            t_first, state = timed(provider.observe)
            first_requests = served() - before
            assert len(state.nodes) == args.nodes and len(state.jobs) == args.jobs, (len(state.nodes),
                                                                                      len(state.jobs))
            used = sum(n.gpus - n.free_gpus for n in state.nodes)
            assert used == args.pods, f"{used} GPUs used, expected {args.pods}"
            steady: list[float] = []
            before = served()
            for _ in range(args.repeats):
                t, _ = timed(provider.observe)
                steady.append(t)
            per_observe = (served() - before) / args.repeats

            # how soon a dispatch shows: the watch delivers it, no observe has to list anything
            t0 = time.perf_counter()
            provider.dispatch(DispatchRequest(job_id="probe-0001", request_id="bench-probe", spec=job_spec(9999)))
            while "probe-0001" not in provider.observe().jobs:
                time.sleep(0.005)
            t_visible = time.perf_counter() - t0

        t_raw, n_raw = timed(lambda: list_raw(api_client(), settings))
        t_models, n_models = timed(lambda: list_models(api_client()))
    finally:
        ours.send("stop")
        child.join(timeout=30)

    print(f"warm-up list right after the build:       {t_warm * 1000:8.1f} ms")
    print(f"first observe (initial lists, 4 caches): {t_first * 1000:8.1f} ms   {first_requests} API requests")
    print(f"steady observe, median of {args.repeats}:        {statistics.median(steady) * 1000:8.1f} ms   "
          f"{per_observe:.1f} API requests per observe (max {max(steady) * 1000:.1f} ms)")
    print(f"dispatch until the Job shows in observe:  {t_visible * 1000:8.1f} ms")
    print("for comparison, one full list per observe instead of watch caches:")
    print(f"  paged raw JSON lists, slim records:      {t_raw * 1000:8.1f} ms   ({n_raw} objects)")
    print(f"  client models (list_* deserialized):     {t_models * 1000:8.1f} ms   ({n_models} objects)")


if __name__ == "__main__":
    main()
