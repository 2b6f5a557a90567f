"""Submit throughput of the HTTP API: `spillover serve` under uvicorn on 127.0.0.1, on SQLite and on PostgreSQL,
with jobs sent in batches and one job per request, from several concurrent clients."""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import yaml

PG_ADMIN = os.environ.get("SPILLOVER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def _config(tmp: Path, url: str) -> Path:
    cfg = {
        "apiVersion": "spillover/v1alpha1", "kind": "SpilloverConfig", "store": {"url": url},
        "api": {"max_jobs_per_request": 1000},
        "queues": [{"name": "research", "team": "ml"}],
        "clusters": [{"name": "onprem", "kind": "onprem", "provider": "simulated",
                      "node_groups": [{"count": 4, "gpus_per_node": 8, "gpu_type": "A100", "cpu_per_node": 96,
                                       "memory_gib_per_node": 1024}]}],
    }
    path = tmp / "bench.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _job(i: int) -> dict:
    return {"apiVersion": "spillover/v1alpha1", "kind": "TrainingJob", "metadata": {"name": f"bench-{i}"},
            "spec": {"queue": "research", "image": "ghcr.io/acme/bench:1", "gpus": 1 + i % 8,
                     "estimatedRuntime": "1h"}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _client(url: str, token: str, requests: int, per_request: int, offset: int, ready, go, out) -> None:
    """One keep-alive connection speaking plain HTTP/1.1 over a socket: a load generator that takes little of the
    CPU it shares with the server (an httpx client per process costs about as much as the server's request)."""
    host, port = url.removeprefix("http://").split(":")
    reqs = []
    for k in range(8):
        body = json.dumps([_job(offset + k * per_request + i) for i in range(per_request)]).encode()
        reqs.append(b"POST /api/v1/jobs HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n"
                    b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                    % (host.encode(), token.encode(), len(body), body))
    errors = []
    with socket.create_connection((host, int(port))) as sock:
        f = sock.makefile("rb")
        ready.release()
        go.wait()
        for k in range(requests):
            sock.sendall(reqs[k % len(reqs)])
            status = f.readline()
            length = 0
            while (line := f.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            answer = f.read(length)
            if b" 201 " not in status:
                errors.append(f"{status.decode().strip()} {answer[:200].decode(errors='replace')}")
    out.put(errors)


def _drive(url: str, token: str, clients: int, requests: int, per_request: int) -> tuple[int, float]:
    """`clients` processes (one HTTP connection each, so the load generator is not held by one GIL) each sending
    `requests` submits of `per_request` jobs; (jobs stored, seconds)."""
    ctx = multiprocessing.get_context("spawn")
    ready, go, out = ctx.Semaphore(0), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_client, args=(url, token, requests, per_request, n * 100_000, ready, go, out))
             for n in range(clients)]
    for p in procs:
        p.start()
    for _ in procs:
        ready.acquire()
    t0 = time.perf_counter()
    go.set()
    errors = [e for _ in procs for e in out.get()]
    elapsed = time.perf_counter() - t0
    for p in procs:
        p.join()
    if errors:
        raise SystemExit(f"submits failed: {errors[0]} ({len(errors)} in all)")
    return clients * requests * per_request, elapsed


def bench(store: str, url: str, args: argparse.Namespace) -> dict[str, float]:
    from spillover.scheduler.auth import create_token
    from spillover.scheduler.store import Store

    tmp = Path(tempfile.mkdtemp(prefix="spillover-bench-api-"))
    cfg = _config(tmp, url)
    st = Store(url)
    token = create_token(st, team="ml", role="submitter", name="bench", now=time.time())[1]
    st.close()
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "spillover.scheduler.cli", "serve", "-c", str(cfg),
                               "--port", str(port), "--log-level", "warning", "--no-access-log"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit(f"the server did not start: {server.stderr.read() if server.poll() is not None else ''}")
            time.sleep(0.1)
        _drive(base, token, 2, 5, 10)  # warm-up: connections, caches
        jobs, secs = _drive(base, token, args.clients, args.batches, args.batch_size)
        batched = jobs / secs
        print(f"{store:<10} batched: {jobs:,} jobs in {args.clients * args.batches} requests of {args.batch_size} "
              f"from {args.clients} clients: {secs:.2f} s, {batched:,.0f} jobs/s", flush=True)
        jobs, secs = _drive(base, token, args.clients, args.singles, 1)
        single = jobs / secs
        print(f"{store:<10} single:  {jobs:,} requests of one job from {args.clients} clients: {secs:.2f} s, "
              f"{single:,.0f} submits/s", flush=True)
        return {"batched_jobs_per_s": batched, "single_submits_per_s": single}
    finally:
        server.terminate()
        server.wait(timeout=30)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--stores", default="sqlite,postgres", help="sqlite, postgres or both")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients (processes)")
    p.add_argument("--batch-size", type=int, default=100, help="jobs per batched request")
    p.add_argument("--batches", type=int, default=12, help="batched requests per client")
    p.add_argument("--singles", type=int, default=150, help="one-job requests per client")
    args = p.parse_args(argv)
    results = {}
    for store in args.stores.split(","):
        if store == "sqlite":
            tmp = Path(tempfile.mkdtemp(prefix="spillover-bench-api-"))
            results[store] = bench(store, f"sqlite:///{tmp / 'bench.db'}", args)
        elif store == "postgres":
            import psycopg

            name = f"spillover_bench_{uuid.uuid4().hex[:10]}"  # a database of its own, dropped afterwards
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
            try:
                url = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{name}"
                results[store] = bench(store, url, args)
            finally:
                with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        else:
            p.error(f"--stores: unknown store {store!r}")
    targets = {"batched_jobs_per_s": 1000, "single_submits_per_s": 200}
    for store, r in results.items():
        verdict = ", ".join(f"{k} {v:,.0f} ({'meets' if v >= targets[k] else 'below'} {targets[k]:,})"
                            for k, v in r.items())
        print(f"{store}: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
