"""A managed cloud cluster as one member: jobs and nodes through its Kubernetes API, the size of its GPU node
pools through its cloud's node-pool API (EKS, GKE, AKS), joined into one `ClusterState`.

A scale-up shows in the node-pool API at once and in Kubernetes only when the instances have booted and joined;
until then the missing nodes are reported as booting (`ready=False`, `ready_at` = when the scale-up was asked
plus the pool's provisioning delay), so the solver can plan on them and the loop can time them out.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence

from spillover.providers.contract import (
    Clock,
    ClusterState,
    DispatchRequest,
    ErrorKind,
    JobStatus,
    NodeInfo,
    PoolSpec,
    PoolState,
    ProviderError,
)
from spillover.providers.kubernetes import KubernetesProvider
from spillover.providers.nodepools import NodePoolAPI, PoolSize

log = logging.getLogger(__name__)

# Node-pool API failures that only make the pool's size a little stale: said as a warning, the cycle goes on.
PASSING = (ErrorKind.UNREACHABLE, ErrorKind.TRANSIENT, ErrorKind.THROTTLED)


class CloudClusterProvider:
    """One EKS, GKE or AKS cluster (see the module docstring)."""

    def __init__(self, name: str, kube: KubernetesProvider, pools_api: NodePoolAPI, pools: Sequence[PoolSpec],
                 clock: Clock) -> None:
        self.name = name
        self.kube = kube
        self.pools_api = pools_api
        self._pools = {p.name: p for p in pools}
        self._clock = clock
        self._asked: dict[str, tuple[int, float]] = {}  # pool -> (size last asked for, when the growth began)
        self._last: dict[str, PoolSize] = {}
        self._errors: list[ProviderError] = []
        self._said: set[tuple[str, str]] = set()

    # ---- the contract --------------------------------------------------------------------------

    def observe(self) -> ClusterState:
        state = self.kube.observe()  # an unreachable Kubernetes API makes the whole cluster unobservable
        now = self._clock.now()
        records = {r.name: r for r in self.kube.nodes_cache.items()}
        warnings = list(state.warnings)
        pools: list[PoolState] = []
        booting: list[NodeInfo] = []
        usable = {n.name for n in state.nodes}
        for p in self._pools.values():
            size = self._pool_size(p.name, warnings)
            members = [r for r in records.values() if r.pool == p.name]
            ready = [r for r in members if r.name in usable]
            asked = self._asked.get(p.name)
            if size is not None and size.desired is not None:
                desired = size.desired
            elif asked is not None:
                desired = asked[0]
            else:
                desired = len(members)
            since = asked[1] if asked is not None else now
            ready_at = max(now, since + p.provisioning_delay_s)
            # joined but not Ready yet, then not joined at all: both still booting as far as jobs are concerned
            for r in members:
                if r.name not in usable and r.ready is False:
                    booting.append(self._booting_node(p, r.name, ready_at))
            for i in range(max(0, desired - len(members))):
                booting.append(self._booting_node(p, f"{p.name}-booting-{i}", ready_at))
            cloud_max = size.max_size if size is not None and size.max_size is not None else math.inf
            pools.append(PoolState(
                name=p.name, instance_type=p.instance_type, gpu_type=p.gpu_type, gpus_per_node=p.gpus_per_node,
                desired_nodes=desired, nodes=max(desired, len(members)), ready_nodes=len(ready),
                min_nodes=p.min_nodes, max_nodes=int(min(p.max_nodes, cloud_max)), removes_idle_first=False,
                spot=p.spot))
        return dataclasses.replace(state, nodes=state.nodes + tuple(booting), pools=tuple(pools),
                                   warnings=tuple(warnings))

    def dispatch(self, request: DispatchRequest) -> None:
        self.kube.dispatch(request)

    def cancel(self, job_id: str, request_id: str) -> None:
        self.kube.cancel(job_id, request_id)

    def job_status(self, job_id: str) -> JobStatus | None:
        return self.kube.job_status(job_id)

    def scale_pool(self, pool: str, desired_nodes: int, request_id: str) -> None:
        if pool not in self._pools:
            raise ProviderError(ErrorKind.INVALID, f"no node pool {pool!r} in {self.name}", cluster=self.name,
                                pool=pool, request_id=request_id)
        try:
            self.pools_api.set_size(pool, desired_nodes, request_id)
        except ProviderError as e:
            e.cluster, e.pool = self.name, e.pool or pool
            raise
        before = self._asked.get(pool)
        last = self._last.get(pool)
        current = before[0] if before else (last.desired if last and last.desired is not None else 0)
        # a growth starts the boot clock; a shrink, or asking again for the same size, keeps it
        start = self._clock.now() if desired_nodes > current or before is None else before[1]
        self._asked[pool] = (desired_nodes, start)

    def poll_errors(self) -> list[ProviderError]:
        errors = self.kube.poll_errors() + self.pools_api.poll_errors()
        for e in errors:
            e.cluster = self.name
        errors, self._errors = self._errors + errors, []
        return errors

    def close(self) -> None:
        self.kube.close()
        self.pools_api.close()

    # ---- internals -------------------------------------------------------------------------------

    def _pool_size(self, pool: str, warnings: list[str]) -> PoolSize | None:
        """The cloud's view of the pool; on a passing failure the last one, with a warning."""
        try:
            size = self.pools_api.get_pool(pool)
        except ProviderError as e:
            e.cluster, e.pool = self.name, e.pool or pool
            key = (pool, f"{e.kind.value}: {e.message}")
            if e.kind in PASSING:
                warnings.append(f"node-pool API: {e}; pool sizes may be stale")
            elif key not in self._said:
                self._said.add(key)
                self._errors.append(e)  # the pool cannot be used: the loop sends its jobs elsewhere
            return self._last.get(pool)
        self._said = {k for k in self._said if k[0] != pool}
        self._last[pool] = size
        asked = self._asked.get(pool)
        if asked is not None and size.desired is not None and size.desired != asked[0] and not size.updating:
            self._asked.pop(pool)  # someone else resized it; the cloud's number wins
        return size

    def _booting_node(self, p: PoolSpec, name: str, ready_at: float) -> NodeInfo:
        return NodeInfo(name=name, gpu_type=p.gpu_type, gpus=p.gpus_per_node, cpu=p.cpu_per_node,
                        memory_gib=p.memory_gib_per_node, free_gpus=p.gpus_per_node, free_cpu=p.cpu_per_node,
                        free_memory_gib=p.memory_gib_per_node, ready=False, pool=p.name, ready_at=ready_at)
