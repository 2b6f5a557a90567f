"""GPU utilization and queue signals read from a Prometheus server; a server in trouble degrades to a warning."""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util.retry import Retry

log = logging.getLogger(__name__)

GPU_UTILIZATION = "gpu_utilization"
# Label that names the node, best first: DCGM exporter's own, then the usual relabelled ones.
NODE_LABELS = ("Hostname", "node", "instance")
_MAX_DETAIL = 200


@dataclass(frozen=True)
class SignalReading:
    """One read of every configured query. On failure the dicts hold what could be read (often nothing)."""

    signals: dict[str, float] = field(default_factory=dict)  # scalar queries: name -> value
    gpu_utilization: dict[str, float] = field(default_factory=dict)  # node -> percent
    warning: str | None = None  # one line, no credentials; None when every query answered


class PrometheusSettings(Protocol):
    """What `PrometheusSignals.from_config` needs; `spillover.scheduler.config.PrometheusConfig` has it."""

    url: str
    timeout_s: float
    queries: Mapping[str, str]


class _Unreachable(Exception):
    """The server could not be talked to at all, so asking it the remaining queries is pointless."""


class _QueryFailed(Exception):
    """One query failed, but the server answered; the other queries are still worth asking."""


class PrometheusSignals:
    """Reads the configured PromQL queries from one Prometheus server.

    `gpu_utilization` must give one series per node (label `Hostname`, `node` or `instance`); several series
    for one node (one per GPU) are averaged. Every other query is a scalar signal: a vector is summed, so
    an empty vector reads as 0. `read()` never raises, and every request is bounded by what is left of
    `timeout_s` for the whole read: an unreachable, slow or broken server gives empty signals and a warning.
    """

    def __init__(self, url: str, queries: Mapping[str, str], timeout_s: float = 5.0) -> None:
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"Prometheus URL must look like http://host:9090, got {redact_url(url)!r}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self.url = redact_url(url)
        self.queries = dict(queries)
        self.timeout_s = float(timeout_s)
        self._lock = threading.Lock()
        self._last_response: requests.Response | None = None
        self._last_warning: str | None = None
        session = requests.Session()
        # The library only raises on a non-200 status; the hook keeps the response so the warning can
        # quote Prometheus's own error text instead of a raw byte dump.
        session.hooks["response"].append(self._remember_response)
        # No retries: the loop asks again next cycle, and backing off here would stall the whole cycle.
        self._client = PrometheusConnect(
            url=url.strip().rstrip("/"),
            disable_ssl=True,
            session=session,
            retry=Retry(total=0, read=False),
            timeout=self.timeout_s,
        )

    @classmethod
    def from_config(cls, config: PrometheusSettings) -> PrometheusSignals:
        """Build from any object with `url`, `queries` and `timeout_s` attributes."""
        return cls(url=config.url, queries=config.queries, timeout_s=config.timeout_s)

    def read(self) -> SignalReading:
        """Ask every query once. Never raises; the first occurrence of each new failure is logged."""
        with self._lock:
            try:
                reading = self._read()
            except Exception as exc:  # never let a signal source take the loop down
                reading = SignalReading(warning=f"prometheus {self.url}: unexpected {type(exc).__name__}")
            self._log_change(reading.warning)
            return reading

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> PrometheusSignals:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PrometheusSignals(url={self.url!r}, queries={sorted(self.queries)!r}, timeout_s={self.timeout_s})"

    def _read(self) -> SignalReading:
        deadline = time.monotonic() + self.timeout_s
        signals: dict[str, float] = {}
        utilization: dict[str, float] = {}
        failures: list[tuple[str, str]] = []
        for name, promql in self.queries.items():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return SignalReading(warning=f"prometheus {self.url}: no answer within {self.timeout_s:g}s")
            try:
                result = self._query(promql, remaining)
                if name == GPU_UTILIZATION:
                    utilization, problem = _per_node(result)
                else:
                    value, problem = _scalar(result)
                    if value is not None:
                        signals[name] = value
                if problem:
                    failures.append((name, problem))
            except _Unreachable as exc:
                return SignalReading(warning=f"prometheus {self.url}: {exc}")
            except _QueryFailed as exc:
                failures.append((name, str(exc)))
        return SignalReading(signals=signals, gpu_utilization=utilization, warning=self._summary(failures))

    def _query(self, promql: str, remaining: float) -> Any:
        self._last_response = None
        try:
            # Prometheus's own `timeout` stops an expensive query on the server too.
            return self._client.custom_query(promql, params={"timeout": f"{max(remaining, 0.001):.3f}"}, timeout=remaining)
        except requests.Timeout:
            self._client.close()
            raise _Unreachable(f"no answer within {self.timeout_s:g}s") from None
        except requests.ConnectionError as exc:
            # A fresh connection pool next time, so a restarted server is not met with a dead socket.
            self._client.close()
            raise _Unreachable(_connection_problem(exc)) from None
        except PrometheusApiClientException:
            raise _QueryFailed(_http_problem(self._last_response)) from None
        except (requests.JSONDecodeError, ValueError, KeyError, TypeError):
            # 200 but not the API's JSON: usually the URL points at something else, e.g. a login page.
            raise _QueryFailed(f"not a Prometheus API response{_content_type(self._last_response)}") from None
        except requests.RequestException as exc:
            raise _Unreachable(f"request failed ({type(exc).__name__})") from None

    def _remember_response(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self._last_response = response

    def _summary(self, failures: list[tuple[str, str]]) -> str | None:
        if not failures:
            return None
        reasons = {reason for _, reason in failures}
        # Every query failing the same way is one problem with the server, so it is said once.
        if len(failures) > 1 and len(failures) == len(self.queries) and len(reasons) == 1:
            return f"prometheus {self.url}: {reasons.pop()}"
        return f"prometheus {self.url}: " + "; ".join(f"query {name}: {reason}" for name, reason in failures)

    def _log_change(self, warning: str | None) -> None:
        # Warnings are stable strings (no timings, no addresses), so equality means "same failure as before".
        if warning != self._last_warning:
            if warning is not None:
                log.warning("%s", warning)
            elif self._last_warning is not None:
                log.info("prometheus %s: answering again", self.url)
        self._last_warning = warning


def redact_url(url: str) -> str:
    """The URL without user, password, query string or fragment, safe for logs and events."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<malformed URL>"
    return urlunsplit((parts.scheme, host + port, parts.path.rstrip("/"), "", ""))


def _per_node(result: Any) -> tuple[dict[str, float], str | None]:
    series = _vector(result)
    if series is None:
        return {}, f"returned {_shape(result)}; it must give one series per node"
    values: dict[str, list[float]] = {}
    unnamed = 0
    for labels, value in series:
        node = _node_name(labels)
        if node is None:
            unnamed += 1
        elif value is not None:
            values.setdefault(node, []).append(value)
    utilization = {node: sum(v) / len(v) for node, v in values.items()}
    if unnamed:
        return utilization, f"{unnamed} series without a {', '.join(NODE_LABELS[:-1])} or {NODE_LABELS[-1]} label ignored"
    return utilization, None


def _scalar(result: Any) -> tuple[float | None, str | None]:
    series = _vector(result)
    if series is not None:
        return sum(v for _, v in series if v is not None), None
    if _is_sample(result):
        value = _number(result[1])
        if value is None:
            return None, f"returned {result[1]!r}, not a finite number"
        return value, None
    return None, f"returned {_shape(result)}; it must give a number or an instant vector"


def _vector(result: Any) -> list[tuple[dict[str, str], float | None]] | None:
    """An instant vector as (labels, value) pairs; None when the result is something else."""
    if not isinstance(result, list) or not all(isinstance(s, dict) and "value" in s for s in result):
        return None
    out = []
    for s in result:
        labels = s.get("metric") if isinstance(s.get("metric"), dict) else {}
        sample = s["value"]
        out.append((labels, _number(sample[1]) if _is_sample(sample) else None))
    return out


def _is_sample(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[1], str)


def _number(text: str) -> float | None:
    # NaN and ±Inf (e.g. a ratio over zero GPUs) would poison sums and the solver; they count as no data.
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _shape(result: Any) -> str:
    if isinstance(result, list) and result and all(isinstance(s, dict) and "values" in s for s in result):
        return "a range vector"
    if _is_sample(result):
        return "a string"
    return "an unexpected result"


def _node_name(labels: Mapping[str, str]) -> str | None:
    for key in NODE_LABELS:
        value = labels.get(key)
        if value:
            if key == "instance":
                # instance is the scrape target, host:port; the node is the host part.
                match = re.fullmatch(r"\[?(.+?)\]?:\d+", value)
                return match.group(1) if match else value
            return value
    return None


def _connection_problem(exc: requests.ConnectionError) -> str:
    text = str(exc)
    for marker, problem in (
        ("Connection refused", "connection refused"),
        ("Name or service not known", "host name not found"),
        ("nodename nor servname", "host name not found"),
        ("Temporary failure in name resolution", "host name not found"),
        ("No route to host", "no route to host"),
        ("Network is unreachable", "network unreachable"),
        ("CERTIFICATE_VERIFY_FAILED", "TLS certificate rejected"),
        ("SSLError", "TLS handshake failed"),
        ("RemoteDisconnected", "connection closed without a response"),
        ("Connection reset", "connection reset"),
        ("timed out", "connect timed out"),
    ):
        if marker in text:
            return problem
    # The raw text names connection objects by memory address, which would defeat warning de-duplication.
    return f"connection failed ({type(exc).__name__})"


def _http_problem(response: requests.Response | None) -> str:
    if response is None:
        return "HTTP error"
    detail = ""
    try:
        body = response.json()
        if isinstance(body, dict) and body.get("error"):
            detail = f"{body.get('errorType') or 'error'}: {body['error']}"
    except ValueError:
        pass
    if not detail:
        detail = (response.reason or "").strip() or "no error text"
    detail = " ".join(str(detail).split())
    if len(detail) > _MAX_DETAIL:
        detail = detail[: _MAX_DETAIL - 3] + "..."
    return f"HTTP {response.status_code} ({detail})"


def _content_type(response: requests.Response | None) -> str:
    kind = response.headers.get("Content-Type", "").split(";")[0].strip() if response is not None else ""
    return f" (got {kind})" if kind else ""
