"""Prometheus signals through prometheus-api-client: the real server, and peers that misbehave on purpose."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from spillover.providers.prometheus import PrometheusSignals, SignalReading, redact_url
from spillover.scheduler.config import DEFAULT_PROMQL, PrometheusConfig

# Generous next to the timeouts used below: the point is "returns promptly", not how fast.
PROMPTLY_S = 5.0


def signals_for(server, queries=None, timeout_s: float = 2.0) -> PrometheusSignals:
    config = PrometheusConfig(url=server.url, timeout_s=timeout_s, **({"queries": queries} if queries else {}))
    return PrometheusSignals.from_config(config)


def timed_read(signals: PrometheusSignals) -> tuple[SignalReading, float]:
    start = time.monotonic()
    reading = signals.read()
    return reading, time.monotonic() - start


# --- against the real Prometheus server -------------------------------------------------------------------


def test_default_queries_give_utilization_per_node_and_pending_gpu_pods(gpu_exporter, prometheus_server):
    gpu_exporter.set_gpu_util("gpu-node-1", 40, gpu="0")
    gpu_exporter.set_gpu_util("gpu-node-1", 60, gpu="1")
    gpu_exporter.set_gpu_util("gpu-node-2", 5, gpu="0")
    gpu_exporter.set_pod("ml", "train-a", gpus=1)
    gpu_exporter.set_pod("ml", "train-b", gpus=1)
    gpu_exporter.set_pod("ml", "train-c", gpus=1, phase="Running")
    gpu_exporter.set_pod("ml", "notebook", gpus=0)  # pending, but asks for no GPU
    prometheus_server.wait_for_scrape()

    reading = signals_for(prometheus_server).read()

    assert reading == SignalReading(
        signals={"pending_gpu_pods": 2.0},
        gpu_utilization={"gpu-node-1": 50.0, "gpu-node-2": 5.0},
        warning=None,
    )


def test_custom_queries_from_config(gpu_exporter, prometheus_server):
    for gpu, util in enumerate([10, 70, 90]):
        gpu_exporter.set_gpu_util("gpu-node-1", util, gpu=str(gpu))
    prometheus_server.wait_for_scrape()
    queries = {
        "gpu_utilization": "max by (Hostname) (DCGM_FI_DEV_GPU_UTIL)",
        "busy_gpus": "count(DCGM_FI_DEV_GPU_UTIL > 50)",
        "mean_utilization": "scalar(avg(DCGM_FI_DEV_GPU_UTIL))",
    }

    reading = signals_for(prometheus_server, queries).read()

    assert reading.gpu_utilization == {"gpu-node-1": 90.0}
    assert reading.signals == {"busy_gpus": 2.0, "mean_utilization": pytest.approx(170 / 3)}
    assert reading.warning is None


def test_a_vector_for_a_scalar_signal_is_summed_and_an_empty_one_is_zero(gpu_exporter, prometheus_server):
    gpu_exporter.set_pod("ml", "a", gpus=4)
    gpu_exporter.set_pod("ml", "b", gpus=2, phase="Running")
    prometheus_server.wait_for_scrape()
    queries = {
        "requested_gpus": 'kube_pod_container_resource_requests{resource="nvidia_com_gpu"}',
        "nothing_matches": 'kube_pod_container_resource_requests{resource="google_com_tpu"}',
    }

    reading = signals_for(prometheus_server, queries).read()

    assert reading.signals == {"requested_gpus": 6.0, "nothing_matches": 0.0}
    assert reading.warning is None


@pytest.mark.parametrize(
    ("promql", "node"),
    [
        ('avg by (node) (label_replace(DCGM_FI_DEV_GPU_UTIL, "node", "$1", "Hostname", "(.*)"))', "gpu-node-1"),
        ("avg by (instance) (DCGM_FI_DEV_GPU_UTIL)", "127.0.0.1"),  # the scrape target, port dropped
    ],
)
def test_node_is_taken_from_node_or_instance_when_hostname_is_absent(gpu_exporter, prometheus_server, promql, node):
    gpu_exporter.set_gpu_util("gpu-node-1", 30)
    prometheus_server.wait_for_scrape()

    reading = signals_for(prometheus_server, {"gpu_utilization": promql}).read()

    assert reading.gpu_utilization == {node: 30.0}
    assert reading.warning is None


def test_utilization_without_a_node_label_is_a_warning(gpu_exporter, prometheus_server):
    gpu_exporter.set_gpu_util("gpu-node-1", 30)
    prometheus_server.wait_for_scrape()

    reading = signals_for(prometheus_server, {"gpu_utilization": "avg(DCGM_FI_DEV_GPU_UTIL)"}).read()

    assert reading.gpu_utilization == {}
    assert "gpu_utilization" in reading.warning and "without a Hostname, node or instance label" in reading.warning


def test_invalid_promql_is_a_warning_and_the_other_queries_still_count(gpu_exporter, prometheus_server):
    gpu_exporter.set_gpu_util("gpu-node-1", 80)
    prometheus_server.wait_for_scrape()
    queries = {**DEFAULT_PROMQL, "broken": "sum(DCGM_FI_DEV_GPU_UTIL"}

    reading = signals_for(prometheus_server, queries).read()

    assert reading.gpu_utilization == {"gpu-node-1": 80.0}
    assert reading.signals == {"pending_gpu_pods": 0.0}
    assert reading.warning.startswith(f"prometheus {prometheus_server.url}: query broken: HTTP 400 (bad_data: ")
    assert "parse error" in reading.warning and "\n" not in reading.warning


def test_stopped_server_gives_a_prompt_warning_once_and_values_come_back(gpu_exporter, prometheus_server, caplog):
    caplog.set_level(logging.INFO, logger="spillover.providers.prometheus")
    gpu_exporter.set_gpu_util("gpu-node-1", 20)
    prometheus_server.wait_for_scrape()
    signals = signals_for(prometheus_server)
    assert signals.read().gpu_utilization == {"gpu-node-1": 20.0}

    prometheus_server.stop()
    down = [timed_read(signals) for _ in range(3)]

    for reading, elapsed in down:
        assert elapsed < PROMPTLY_S
        assert reading == SignalReading(warning=f"prometheus {prometheus_server.url}: connection refused")
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [down[0][0].warning]

    gpu_exporter.set_gpu_util("gpu-node-1", 95)
    prometheus_server.start()  # same port and data; returns after a fresh scrape

    back = signals.read()
    assert back.gpu_utilization == {"gpu-node-1": 95.0}
    assert back.warning is None
    assert caplog.records[-1].getMessage() == f"prometheus {prometheus_server.url}: answering again"


# --- peers that misbehave on purpose (no Prometheus binary needed) ---------------------------------------


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog does) but never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield s.getsockname()[1]


@pytest.fixture
def http_peer() -> Iterator[dict]:
    """A real HTTP server on 127.0.0.1 answering every request with the status, type and body in `reply`."""
    reply = {"status": 200, "type": "text/plain", "body": b""}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(reply["status"])
            self.send_header("Content-Type", reply["type"])
            self.send_header("Content-Length", str(len(reply["body"])))
            self.end_headers()
            self.wfile.write(reply["body"])

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    reply["url"] = f"http://127.0.0.1:{server.server_port}"
    try:
        yield reply
    finally:
        server.shutdown()
        server.server_close()


def test_a_server_that_never_answers_costs_about_one_timeout_for_all_queries(silent_port):
    queries = {f"q{i}": "up" for i in range(4)}
    signals = PrometheusSignals(f"http://127.0.0.1:{silent_port}", queries, timeout_s=1.0)

    reading, elapsed = timed_read(signals)

    assert reading == SignalReading(warning=f"prometheus http://127.0.0.1:{silent_port}: no answer within 1s")
    assert elapsed < 3.0  # four queries at one timeout each would take 4 s


@pytest.mark.parametrize(
    ("status", "content_type", "body", "problem"),
    [
        (200, "text/html", b"<html>Sign in</html>", "not a Prometheus API response (got text/html)"),
        (200, "application/json", b'{"status": "success"}', "not a Prometheus API response (got application/json)"),
        (502, "text/plain", b"upstream unavailable", "HTTP 502 (Bad Gateway)"),
        (503, "application/json", b'{"status":"error","errorType":"timeout","error":"query timed out"}',
         "HTTP 503 (timeout: query timed out)"),
    ],
)
def test_garbage_and_errors_are_warnings(http_peer, status, content_type, body, problem):
    http_peer.update(status=status, type=content_type, body=body)
    signals = PrometheusSignals(http_peer["url"], DEFAULT_PROMQL, timeout_s=2.0)

    reading = signals.read()

    assert reading == SignalReading(warning=f"prometheus {http_peer['url']}: {problem}")


def test_a_scalar_query_answering_a_range_vector_is_a_warning(http_peer):
    http_peer.update(type="application/json", body=b'{"status":"success","data":{"resultType":"matrix","result":'
                                                   b'[{"metric":{},"values":[[1,"1"]]}]}}')

    reading = PrometheusSignals(http_peer["url"], {"pending": "up[1m]"}).read()

    assert reading.signals == {}
    assert reading.warning.endswith("returned a range vector; it must give a number or an instant vector")


def test_credentials_never_reach_warnings_logs_or_repr(closed_port, caplog):
    url = f"http://alice:s3cret@127.0.0.1:{closed_port}/prometheus/?token=abc123"
    signals = PrometheusSignals(url, DEFAULT_PROMQL, timeout_s=1.0)

    reading = signals.read()

    assert reading.warning == f"prometheus http://127.0.0.1:{closed_port}/prometheus: connection refused"
    for text in (reading.warning, repr(signals), caplog.text):
        assert "alice" not in text and "s3cret" not in text and "abc123" not in text


def test_each_distinct_failure_is_logged_once(closed_port, http_peer, caplog):
    caplog.set_level(logging.INFO, logger="spillover.providers.prometheus")
    signals = PrometheusSignals(f"http://127.0.0.1:{closed_port}", {"x": "up"}, timeout_s=1.0)
    for _ in range(5):
        signals.read()
    assert len(caplog.records) == 1

    http_peer.update(status=500, body=b"boom")
    other = PrometheusSignals(http_peer["url"], {"x": "up"}, timeout_s=1.0)
    other.read()
    other.read()
    http_peer.update(status=503)
    other.read()
    assert [r.getMessage().rsplit(": ", 1)[-1] for r in caplog.records] == [
        "connection refused", "HTTP 500 (Internal Server Error)", "HTTP 503 (Service Unavailable)"]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://user:pw@prom.example.com:9443/api/?x=1#f", "https://prom.example.com:9443/api"),
        ("http://[::1]:9090/", "http://[::1]:9090"),
        ("http://prometheus", "http://prometheus"),
    ],
)
def test_redact_url(url, shown):
    assert redact_url(url) == shown


@pytest.mark.parametrize("url", ["prometheus:9090", "ftp://prometheus", "http://"])
def test_a_url_that_is_not_http_is_refused_at_construction(url):
    with pytest.raises(ValueError, match="Prometheus URL must look like"):
        PrometheusSignals(url, DEFAULT_PROMQL)
