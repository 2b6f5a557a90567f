"""Prometheus metrics end to end: `spillover run --metrics-port` and the store's metrics scraped by the real
Prometheus, every panel of the Grafana dashboard queried through prometheus-api-client, and the figures a user
checks against the store and `spillover cost-report`."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select
from prometheus_api_client import PrometheusConnect
from prometheus_client.parser import text_string_to_metric_families

from api_helpers import serve
from config_helpers import fast_loop_config
from conftest import make_config
from spillover.providers.contract import ErrorKind, ProviderError
from spillover.scheduler.config import load_config
from spillover.scheduler.costs import cost_report
from spillover.scheduler.loop import ControlLoop
from spillover.scheduler.metrics import LoopMetrics, render, store_registry
from spillover.scheduler.model import JobSpec, JobState
from spillover.scheduler.store import Store
from spillover.scheduler.tables import LeadershipRow
from spillover.scheduler.wiring import build_providers

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "spillover-dashboard.json"
SPILLOVER = [sys.executable, "-m", "spillover.scheduler.cli"]
# What Grafana puts in place of its variables when it runs a panel's query.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "15s", "$__range": "5m", "$queue": ".*"}
LOOP_JOB, API_JOB = "spillover-loop", "spillover-api"
N_BURST = 4  # research jobs that find on-prem full and burst to the cloud


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT))


def _config(tmp: Path) -> Path:
    # research pays for the cloud rather than wait; batch waiting is worth nothing, so it waits for on-prem
    return fast_loop_config(tmp, queues=[{"name": "research", "team": "vision"},
                                         {"name": "batch", "value_of_time_per_gpu_hour": 0}])


def _jobs_file(tmp: Path, queue: str) -> Path:
    def job(name: str, gpus: int, runtime: str) -> dict:
        return {"apiVersion": "spillover/v1alpha1", "kind": "TrainingJob", "metadata": {"name": name},
                "spec": {"queue": queue, "image": "img:1", "gpus": gpus, "estimatedRuntime": runtime}}

    if queue == "batch":  # three long jobs: one holds on-prem for the whole test, two wait behind it
        docs = [job(f"batch-{i}", 8, "1h") for i in range(3)]
    else:  # on-prem is full: these burst to the cloud
        docs = [job(f"burst-{i}", 4, "4s") for i in range(N_BURST)]
    path = tmp / f"{queue}.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    return path


def _submit(cfg: Path, queue: str) -> None:
    subprocess.run([*SPILLOVER, "submit", str(_jobs_file(cfg.parent, queue)), "-c", str(cfg)], env=_env(),
                   check=True, capture_output=True)


def _wait(condition, what: str, timeout: float = 30.0, every: float = 0.3):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:g}s waiting for {what} (last: {last!r})")


def dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target of every panel, with Grafana's variables filled in."""
    out = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets", ()):
            expr = target["expr"]
            for var, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(var, value)
            out.append((panel["title"], expr))
    return out


def by(result: list[dict], *labels: str) -> dict:
    return {tuple(r["metric"].get(k, "") for k in labels) if len(labels) > 1 else r["metric"].get(labels[0], ""):
            float(r["value"][1]) for r in result}


@pytest.fixture
def loop_process(tmp_path):
    """(config path, metrics port, start): `start()` submits the batch jobs and starts `spillover run
    --metrics-port`."""
    cfg = _config(tmp_path)
    port = _free_port()
    procs: list[subprocess.Popen] = []

    def start() -> subprocess.Popen:
        _submit(cfg, "batch")
        proc = subprocess.Popen([*SPILLOVER, "run", "-c", str(cfg), "--state-dir", str(tmp_path / "sim"),
                                 "--metrics-port", str(port)], env=_env(), cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        procs.append(proc)
        _wait(lambda: _get(f"http://127.0.0.1:{port}/metrics") or proc.poll() is not None, "the loop's /metrics")
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        return proc

    try:
        yield cfg, port, start
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)


def _get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.read().decode()
    except OSError:
        return None


def test_dashboard_panels_and_figures_match_the_store(loop_process, tmp_path, prometheus_scraping):
    cfg_path, loop_port, start_loop = loop_process
    config = yaml.safe_load(cfg_path.read_text())
    store = Store(config["store"]["url"])
    # two stateless API replicas on the same store, each serving /metrics
    replicas = [serve(load_config(cfg_path), Store(config["store"]["url"])) for _ in range(2)]
    try:
        # Prometheus first, so that it sees the burst from its start (the API replicas answer already)
        prom = prometheus_scraping({API_JOB: [r.url.removeprefix("http://") for r in replicas],
                                    LOOP_JOB: [f"127.0.0.1:{loop_port}"]})
        pc = PrometheusConnect(url=prom.url, disable_ssl=True)
        proc = start_loop()
        # the burst comes once Prometheus has the loop's series, so that the rates see it happen
        _wait(lambda: pc.custom_query(f'spillover_cycle_duration_seconds_count{{job="{LOOP_JOB}"}} > 0'),
              "a scrape of the loop")
        _submit(cfg_path, "research")

        def research_done():
            jobs = store.jobs(queue="research")
            return len(jobs) == N_BURST and all(j.state == JobState.SUCCEEDED for j in jobs)

        _wait(research_done, "the research jobs to run in the cloud and finish", timeout=40)
        # the pool scales back to zero once idle; its node time is then all in the ledger
        _wait(lambda: pc.custom_query(f'sum(spillover_cloud_gpus{{job="{LOOP_JOB}"}}) == 0'), "the pool to empty")
        prom.wait_for_scrape()

        # every panel's query parses and finds its series: the dashboard and the metric names cannot drift apart
        panels: dict[str, list] = {}
        for title, expr in dashboard_exprs():
            result = pc.custom_query(expr)
            assert result, f"panel {title!r}: {expr} returned no series"
            panels.setdefault(title, []).append(result)
        # and what they show of the burst
        assert by(panels["Admissions per second"][0], "queue", "cluster")[("research", "aws")] > 0
        assert by(panels["Spend rate per cloud"][0], "cloud")["aws"] > 0
        assert not math.isnan(by(panels["Admission wait p50 / p95"][1], "queue")["research"])
        for title in ("Solver time p50 / p95", "Cycle duration p95", "Solver optimality gap"):
            assert not any(math.isnan(float(r["value"][1])) for res in panels[title] for r in res), title

        # pending jobs per queue, as the store holds them, from the loop's memory and from the store alike
        pending = Counter(j.queue for j in store.jobs(states=[JobState.PENDING]))
        assert pending == {"batch": 2}
        for job in (LOOP_JOB, API_JOB):
            got = by(pc.custom_query(f'max by (queue) (spillover_pending_jobs{{job="{job}"}})'), "queue")
            assert got == {"research": 0.0, "batch": 2.0}, job
        # ... and the replicas agree, series by series
        assert by(pc.custom_query(f'count by (queue) (spillover_pending_jobs{{job="{API_JOB}"}})'), "queue") == {
            "research": 2.0, "batch": 2.0}
        assert pc.custom_query(f'max by (queue) (spillover_pending_jobs{{job="{API_JOB}"}}) != '
                               f'min by (queue) (spillover_pending_jobs{{job="{API_JOB}"}})') == []

        # admissions count the dispatches, per queue and cluster
        queue_of = {j.id: j.queue for j in store.jobs()}
        dispatched = Counter((queue_of[e.job_id], e.cluster) for e in store.events() if e.kind in ("placed", "burst"))
        assert dispatched[("research", "aws")] >= 1  # something did burst
        admitted = by(pc.custom_query(f'spillover_admitted_jobs_total{{job="{LOOP_JOB}"}} > 0'), "queue", "cluster")
        assert admitted == {k: float(n) for k, n in dispatched.items()}
        assert sum(admitted.values()) == sum(j.attempts for j in store.jobs())

        # cloud GPUs came up for the burst (a p4d node has 8)
        peak = pc.custom_query(f'max_over_time(sum(spillover_cloud_gpus{{job="{LOOP_JOB}"}})[5m:1s])')
        assert float(peak[0]["value"][1]) >= 8

        # spend per cloud matches `spillover cost-report --by cloud` within its rounding, from both exporters
        def spend_matches():
            report = subprocess.run([*SPILLOVER, "cost-report", "-c", str(cfg_path), "--by", "cloud", "--format",
                                     "json"], env=_env(), check=True, capture_output=True, text=True).stdout
            expected = {r["cloud"]: r["usd"] for r in json.loads(report) if r["usd"] > 0}
            seen = {}
            for job in (LOOP_JOB, API_JOB):
                got = by(pc.custom_query(f'sum by (cloud) (max by (cloud, team) '
                                         f'(spillover_spend_usd_total{{job="{job}"}}))'), "cloud")
                seen[job] = got
                if set(expected) - set(got) or any(abs(got[c] - usd) > 0.006 for c, usd in expected.items()):
                    return False
            return expected, seen

        expected, _seen = _wait(spend_matches, "spend to match cost-report", timeout=15, every=1.0)
        assert expected.get("aws", 0) > 0

        # what the loop measured of itself: cycles, solves, and no provider error on healthy clusters
        cycles = pc.custom_query(f'spillover_cycle_duration_seconds_count{{job="{LOOP_JOB}"}}')
        assert float(cycles[0]["value"][1]) >= 10
        solves = pc.custom_query(f'sum(spillover_solves_total{{job="{LOOP_JOB}"}})')
        assert float(solves[0]["value"][1]) >= 1
        errors = pc.custom_query(f'sum(spillover_provider_errors_total{{job="{LOOP_JOB}"}})')
        assert float(errors[0]["value"][1]) == 0
        # the only loop leads, at the epoch the store's leadership row holds
        assert by(panels["Leading loops"][0], "") == {"": 1.0}
        with store.engine.connect() as conn:
            epoch = conn.execute(select(LeadershipRow.epoch)).scalar()
        assert by(panels["Leader epoch"][0], "") == {"": float(epoch)} and epoch >= 1
    finally:
        for r in replicas:
            r.stop()
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]


# --- in process: the hooks, read back through a real scrape of /metrics -------------------------------------


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} from a GET of /metrics, parsed by prometheus_client's parser."""
    text = _get(f"http://127.0.0.1:{port}/metrics")
    assert text is not None
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def spec(name: str, gpus: int = 8, hours: float = 1.0) -> JobSpec:
    return JobSpec(name=name, queue="research", image="img:1", gpus=gpus, estimated_runtime_s=hours * 3600)


@pytest.fixture
def served_loop(clock, sqlite_url):
    config = make_config(policy={"value_of_time_per_gpu_hour": 500.0})  # what does not fit on-prem bursts
    store = Store(sqlite_url)
    providers = build_providers(config, clock)
    metrics = LoopMetrics()
    server, _ = metrics.serve(0)
    try:
        yield config, store, providers, ControlLoop(config, store, providers, clock, metrics=metrics), \
            server.server_port
    finally:
        server.shutdown()
        server.server_close()


def test_provider_errors_are_counted_by_kind_and_cluster(served_loop, clock):
    config, store, providers, loop, port = served_loop
    cloud = next(c.name for c in config.clusters if c.kind == "cloud")
    onprem = next(c.name for c in config.clusters if c.kind == "onprem")
    before = scrape(port)
    zero = {k: v for k, v in before.items() if k[0] == "spillover_provider_errors_total"}
    assert len(zero) == len(config.clusters) * len(ErrorKind) and not any(zero.values())

    providers[cloud].fail_next["scale_pool"] = ProviderError(ErrorKind.STOCKOUT, "no p4d capacity", cluster=cloud)
    providers[onprem].unreachable = True
    store.submit([spec(f"j{i}") for i in range(3)], now=clock.now())
    for _ in range(2):
        clock.advance(30)
        loop.run_cycle()

    after = scrape(port)
    assert after[("spillover_provider_errors_total", (("cluster", cloud), ("kind", "stockout")))] == 1
    assert after[("spillover_provider_errors_total", (("cluster", onprem), ("kind", "unreachable")))] == 2
    assert after[("spillover_cycle_duration_seconds_count", ())] == 2


def test_spend_starts_from_the_ledger_a_restarted_or_new_leader_finds(served_loop, clock, sqlite_url):
    config, store, providers, loop, port = served_loop
    store.submit([spec(f"j{i}", hours=0.5) for i in range(4)], now=clock.now())  # 32 GPUs for on-prem's 16
    for _ in range(100):
        clock.advance(60)
        loop.run_cycle()
    loop.flush()
    ledger = {r.key: r.usd for r in cost_report(store, "cloud") if r.usd > 0}
    assert ledger.get("aws", 0) > 0

    def spend(p: int) -> dict[str, float]:
        out: dict[str, float] = {}
        for (name, labels), v in scrape(p).items():
            if name == "spillover_spend_usd_total":
                cloud = dict(labels)["cloud"]
                out[cloud] = out.get(cloud, 0.0) + v
        return {cloud: usd for cloud, usd in out.items() if usd > 0}

    assert spend(port) == pytest.approx(ledger)
    # the same process leads again (it builds a new loop with the same metrics): nothing is counted twice
    ControlLoop(config, Store(sqlite_url), providers, clock, metrics=loop.metrics)
    assert spend(port) == pytest.approx(ledger)
    again = LoopMetrics()
    server, _ = again.serve(0)
    try:
        ControlLoop(config, Store(sqlite_url), providers, clock, metrics=again)  # a restart, nothing new yet
        assert spend(server.server_port) == pytest.approx(ledger)
    finally:
        server.shutdown()
        server.server_close()


def test_the_store_metrics_say_when_the_store_does_not_answer(tmp_path):
    db = tmp_path / "s.db"
    store = Store(f"sqlite:///{db}")
    store.submit([spec("a"), spec("b")], now=1000.0)
    registry = store_registry(store, make_config())
    text = render(registry)[0].decode()
    assert "spillover_store_up 1.0" in text and 'spillover_pending_jobs{queue="research"} 2.0' in text
    store.close()
    shutil.move(db, tmp_path / "moved.db")
    db.mkdir()  # a directory where the database was: every connection fails

    text = render(registry)[0].decode()

    assert "spillover_store_up 0.0" in text and "spillover_pending_jobs" not in text


def test_a_busy_metrics_port_is_one_clear_line(tmp_path):
    cfg = _config(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        res = subprocess.run([*SPILLOVER, "run", "-c", str(cfg), "--once", "--state-dir", str(tmp_path / "sim"),
                              "--metrics-port", str(port)], env=_env(), capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert re.fullmatch(rf"error: --metrics-port: cannot listen on 127\.0\.0\.1:{port}: .+\n", res.stderr), res.stderr


def test_a_loop_that_stops_leading_drops_its_queue_figures_and_a_new_lead_brings_them_back(served_loop, clock,
                                                                                          sqlite_url):
    config, store, providers, loop, port = served_loop
    store.submit([spec(f"j{i}") for i in range(5)], now=clock.now())  # 40 GPUs: some wait
    loop.run(max_cycles=2)  # as when the lead is lost: the loop returns

    after = scrape(port)
    assert not [k for k in after if k[0] in ("spillover_pending_jobs", "spillover_cloud_gpus", "spillover_jobs")]
    assert after[("spillover_cycle_duration_seconds_count", ())] == 2  # what this process did stays counted

    again = ControlLoop(config, Store(sqlite_url), providers, clock, metrics=loop.metrics)  # it leads again
    again.run_cycle()
    back = scrape(port)
    waiting = sum(1 for j in store.jobs(states=[JobState.PENDING]))
    assert back[("spillover_pending_jobs", (("queue", "research"),))] == waiting
    assert back[("spillover_pending_jobs", (("queue", "prod"),))] == 0
