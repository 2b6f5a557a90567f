"""Fixtures for Prometheus signals: a DCGM/kube-state-metrics style exporter and the real `prometheus` server."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Gauge, start_http_server

SCRAPE_JOB = "gpu-exporter"
POD_PHASES = ("Pending", "Running", "Succeeded", "Failed", "Unknown")
STARTUP_TIMEOUT_S = 30.0


class GpuExporter:
    """Metrics as the DCGM exporter and kube-state-metrics publish them, on a real HTTP port.

    `kube_pod_status_phase` and `kube_pod_container_resource_requests` are both exported so that the
    default `pending_gpu_pods` PromQL runs unchanged against them.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.gpu_util = Gauge("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).", ["Hostname", "gpu"],
                              registry=self.registry)
        self.pod_phase = Gauge("kube_pod_status_phase", "The pods current phase.", ["namespace", "pod", "phase"],
                               registry=self.registry)
        self.pod_requests = Gauge("kube_pod_container_resource_requests", "Resources requested by a container.",
                                  ["namespace", "pod", "container", "resource", "unit"], registry=self.registry)
        self._server, self._thread = start_http_server(0, addr="127.0.0.1", registry=self.registry)
        self.port = self._server.server_port
        self.target = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.target}/metrics"

    def set_gpu_util(self, hostname: str, percent: float, gpu: str = "0") -> None:
        self.gpu_util.labels(Hostname=hostname, gpu=gpu).set(percent)

    def remove_gpu(self, hostname: str, gpu: str = "0") -> None:
        self.gpu_util.remove(hostname, gpu)

    def set_pod(self, namespace: str, pod: str, gpus: int, phase: str = "Pending") -> None:
        """A pod with one container requesting `gpus` GPUs, in `phase` (one 1 and four 0s, as KSM does)."""
        for p in POD_PHASES:
            self.pod_phase.labels(namespace=namespace, pod=pod, phase=p).set(1 if p == phase else 0)
        self.pod_requests.labels(namespace=namespace, pod=pod, container="main", resource="nvidia_com_gpu",
                                 unit="integer").set(gpus)

    def remove_pod(self, namespace: str, pod: str) -> None:
        for p in POD_PHASES:
            self.pod_phase.remove(namespace, pod, p)
        self.pod_requests.remove(namespace, pod, "main", "nvidia_com_gpu", "integer")

    def reset(self) -> None:
        """Drop every series; Prometheus marks them stale at its next scrape."""
        for gauge in (self.gpu_util, self.pod_phase, self.pod_requests):
            gauge.clear()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class PrometheusServer:
    """The real `prometheus` binary on 127.0.0.1, scraping one target every second (or, with `scrape_jobs`,
    several jobs' targets; `wait_for_scrape` then waits for the first job's)."""

    def __init__(self, binary: str, workdir: Path, scrape_target: str = "",
                 scrape_jobs: dict[str, list[str]] | None = None) -> None:
        self.binary = binary
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.config_file = workdir / "prometheus.yml"
        self.log_file = workdir / "prometheus.log"
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None
        jobs = scrape_jobs or {SCRAPE_JOB: [scrape_target]}
        self.job = next(iter(jobs))
        workdir.mkdir(parents=True, exist_ok=True)
        # JSON is YAML, so no YAML writer is needed.
        self.config_file.write_text(json.dumps({
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": targets}]}
                               for job, targets in jobs.items()],
        }))

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start (or restart) on the same port and data directory; returns once a scrape has landed."""
        if self.running:
            return
        with open(self.log_file, "ab") as log:
            self._proc = subprocess.Popen(
                [self.binary,
                 f"--config.file={self.config_file}",
                 f"--storage.tsdb.path={self.data_dir}",
                 f"--web.listen-address=127.0.0.1:{self.port}",
                 "--query.lookback-delta=15s",
                 "--log.level=warn"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        self._wait(lambda: self._get("/-/ready") is not None, "to become ready")
        self.wait_for_scrape()

    def stop(self) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
        self._proc = None

    def wait_for_scrape(self) -> None:
        """Wait until a scrape that began after this call has been stored, so freshly set values are visible."""
        since = time.time()

        def scraped() -> bool:
            # timestamp() of a bare selector is the sample's scrape time; of any other expression, "now".
            stamp, up = self.query(f'timestamp(up{{job="{self.job}"}})'), self.query(f'up{{job="{self.job}"}}')
            return bool(stamp and up) and all(float(s["value"][1]) > since for s in stamp) and all(
                u["value"][1] == "1" for u in up)

        self._wait(scraped, f"to store a scrape of every {self.job} target")

    def query(self, promql: str) -> Any:
        """The raw instant-query result, or None; independent of the code under test on purpose."""
        body = self._get("/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        return json.loads(body)["data"]["result"] if body is not None else None

    def _get(self, path: str) -> bytes | None:
        try:
            with urllib.request.urlopen(self.url + path, timeout=2) as response:
                return response.read()
        except OSError:  # refused, not ready yet (HTTP 503), or timed out: all mean "not now"
            return None

    def _wait(self, condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if not self.running:
                pytest.fail(f"prometheus exited with code {self._proc.returncode if self._proc else '?'}:\n"
                            f"{self._log_tail()}")
            if condition():
                return
            time.sleep(0.1)
        pytest.fail(f"prometheus at {self.url} took over {STARTUP_TIMEOUT_S:g}s {what}:\n{self._log_tail()}")

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prometheus_binary() -> str:
    """Path of the `prometheus` binary; fails under CI (its set-up installs it) and skips elsewhere."""
    path = shutil.which("prometheus")
    if path is None:
        reason = "the `prometheus` binary is not on PATH (Debian package `prometheus`; `make services` installs it)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return path


# Prometheus hands new targets to its scraper on a fixed 5 s tick, so every (re)start costs about 5 s before
# the first scrape. One server per session pays that once; each test still gets a clean exporter.


@pytest.fixture(scope="session")
def _gpu_exporter_session() -> Iterator[GpuExporter]:
    exporter = GpuExporter()
    try:
        yield exporter
    finally:
        exporter.close()


@pytest.fixture(scope="session")
def _prometheus_session(_gpu_exporter_session: GpuExporter,
                        tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    server = PrometheusServer(prometheus_binary(), tmp_path_factory.mktemp("prometheus"), _gpu_exporter_session.target)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def prometheus_scraping(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., PrometheusServer]]:
    """start(jobs={job name: [host:port, ...]}) -> a real server of this test's own scraping those targets every
    second, started once every target of the first job has been scraped; stopped at the end of the test."""
    started: list[PrometheusServer] = []

    def start(jobs: dict[str, list[str]]) -> PrometheusServer:
        server = PrometheusServer(prometheus_binary(), tmp_path_factory.mktemp("prometheus"), scrape_jobs=jobs)
        started.append(server)
        server.start()
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def gpu_exporter(_gpu_exporter_session: GpuExporter) -> GpuExporter:
    """The exporter with no series; set values, then `prometheus_server.wait_for_scrape()` to see them."""
    _gpu_exporter_session.reset()
    return _gpu_exporter_session


@pytest.fixture
def prometheus_server(gpu_exporter: GpuExporter, _prometheus_session: PrometheusServer) -> PrometheusServer:
    """The real server scraping `gpu_exporter` every second; running at the start of every test."""
    _prometheus_session.start()  # a no-op unless an earlier test left it stopped
    return _prometheus_session
