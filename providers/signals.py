"""A member cluster's provider with its Prometheus readings joined to every observation."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Protocol

from spillover.providers.contract import ClusterProvider, ClusterState, DispatchRequest, JobStatus, ProviderError


class _Reading(Protocol):
    signals: dict[str, float]
    gpu_utilization: dict[str, float]
    warning: str | None


class _Signals(Protocol):
    def read(self) -> _Reading: ...


class WithSignals:
    """Delegates the contract to `inner`; `observe` adds the signals. A signal source that fails only adds a
    warning: the observation from the cluster itself is never lost because of it."""

    def __init__(self, inner: ClusterProvider, signals: _Signals) -> None:
        self.inner = inner
        self.name = inner.name
        self._signals = signals

    def observe(self) -> ClusterState:
        state = self.inner.observe()
        reading = self._signals.read()
        return replace(
            state,
            signals={**state.signals, **reading.signals},
            gpu_utilization={**state.gpu_utilization, **reading.gpu_utilization},
            warnings=state.warnings + ((reading.warning,) if reading.warning else ()),
        )

    def dispatch(self, request: DispatchRequest) -> None:
        self.inner.dispatch(request)

    def cancel(self, job_id: str, request_id: str) -> None:
        self.inner.cancel(job_id, request_id)

    def job_status(self, job_id: str) -> JobStatus | None:
        return self.inner.job_status(job_id)

    def scale_pool(self, pool: str, desired_nodes: int, request_id: str) -> None:
        self.inner.scale_pool(pool, desired_nodes, request_id)

    def poll_errors(self) -> list[ProviderError]:
        return self.inner.poll_errors()

    def __getattr__(self, name: str) -> Any:
        # what a particular provider offers beyond the contract (e.g. the simulator's next_event_at)
        return getattr(self.inner, name)
