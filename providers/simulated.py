"""A simulated member cluster that honours the provider contract: nodes, jobs that run for their duration,
node pools that take their provisioning delay to grow, and injectable faults.

Time comes from the injected clock; the cluster advances lazily, event by event, whenever it is called, so a
job starts exactly when a node becomes ready or capacity frees, not when the scheduler next looks. With a
`state_path` the cluster's state lives in a JSON file (written atomically after every change), so it
outlives a scheduler process that is killed — the crash tests rely on this.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from spillover.providers.contract import (
    Clock,
    ClusterState,
    DispatchRequest,
    ErrorKind,
    JobPhase,
    JobStatus,
    NodeInfo,
    PoolSpec,
    PoolState,
    ProviderError,
)
from spillover.scheduler.model import JobSpec

EPS = 1e-9
_PENDING = JobPhase.PENDING.value


@dataclass(frozen=True)
class SimNodeGroup:
    count: int
    gpus_per_node: int
    gpu_type: str
    cpu_per_node: float
    memory_gib_per_node: float


@dataclass
class _Node:
    name: str
    gpu_type: str
    gpus: int
    cpu: float
    memory_gib: float
    ready_at: float
    pool: str | None = None
    used: dict[str, list[float]] = field(default_factory=dict)  # job id -> [gpus, cpu, memory]
    version: int = 0  # bumped whenever `used` changes: observations rebuild only the nodes that changed

    def free(self) -> tuple[float, float, float]:
        g = self.gpus - sum(u[0] for u in self.used.values())
        c = self.cpu - sum(u[1] for u in self.used.values())
        m = self.memory_gib - sum(u[2] for u in self.used.values())
        return g, c, m


@dataclass
class _Job:
    job_id: str
    spec: dict
    pool: str | None
    hints: list[str]
    dispatched_at: float
    phase: str = JobPhase.PENDING.value
    nodes: list[str] = field(default_factory=list)
    started_at: float | None = None
    finish_at: float | None = None
    finished_at: float | None = None
    message: str = ""
    unschedulable_since: float | None = None
    interrupted: bool = False
    progress: float = 0.0  # fraction of the work done before: the run takes the rest
    version: int = 0  # bumped whenever the job changes


RuntimeFn = Callable[[str, JobSpec, str], float]  # (job id, spec, gpu type) -> seconds


class SimulatedCluster:
    """An on-prem cluster (fixed node groups) or a cloud cluster (node pools), simulated."""

    def __init__(
        self,
        name: str,
        clock: Clock,
        *,
        node_groups: tuple[SimNodeGroup, ...] = (),
        pools: tuple[PoolSpec, ...] = (),
        runtime: RuntimeFn | None = None,
        state_path: Path | None = None,
        retention_s: float = 6 * 3600.0,
    ) -> None:
        self.name = name
        self._clock = clock
        self._pools = {p.name: p for p in pools}
        self._runtime = runtime or (lambda _id, spec, _gpu: spec.estimated_runtime_s)
        self._state_path = Path(state_path) if state_path else None
        self._retention_s = retention_s
        self._pending_errors: list[ProviderError] = []
        self.unreachable = False
        self.fail_next: dict[str, ProviderError] = {}  # call name -> error raised by the next such call
        # what was created, in order: lets tests prove that no job ever ran twice
        self.created: list[str] = []
        self._specs: dict[str, JobSpec] = {}
        self._cordoned: set[str] = set()
        # Observing is the hot path of a replay: what did not change since the last look is not built again.
        self._gen = 0  # bumped on every change of nodes, jobs or pool sizes
        self._seen_gen = -1
        self._seen: ClusterState | None = None
        self._node_infos: dict[str, tuple[tuple, NodeInfo]] = {}
        self._statuses: dict[str, tuple[int, JobStatus]] = {}
        self._events_gen = -1
        self._events: tuple[float | None, float | None] = (None, None)
        self._advanced_gen = -1
        if self._state_path and self._state_path.exists():
            self._load()
            return
        self._t = clock.now()
        self._nodes: dict[str, _Node] = {}
        self._jobs: dict[str, _Job] = {}
        self._desired: dict[str, int] = {p.name: p.min_nodes for p in pools}
        self._seq = 0
        i = 0
        for g in node_groups:
            for _ in range(g.count):
                n = _Node(f"{name}-n{i:03d}", g.gpu_type, g.gpus_per_node, g.cpu_per_node,
                          g.memory_gib_per_node, ready_at=self._t)
                self._nodes[n.name] = n
                i += 1
        for p in pools:
            for _ in range(p.min_nodes):
                self._add_node(p, ready_at=self._t)
        self._save()

    # ---- the contract -------------------------------------------------------------------------

    def observe(self) -> ClusterState:
        self._check("observe")
        self._advance(self._clock.now())
        if self._seen is not None and self._seen_gen == self._gen:
            seen = self._seen
            return ClusterState(cluster=self.name, observed_at=self._t, nodes=seen.nodes, pools=seen.pools,
                                jobs=seen.jobs)
        nodes = tuple(self._node_info(n) for n in self._nodes.values())
        pools = tuple(self._pool_state(p) for p in self._pools.values())
        jobs = {j.job_id: self._status(j) for j in self._jobs.values()}
        if len(self._node_infos) > 2 * len(self._nodes) + 64:
            self._node_infos = {k: v for k, v in self._node_infos.items() if k in self._nodes}
        if len(self._statuses) > 2 * len(self._jobs) + 64:
            self._statuses = {k: v for k, v in self._statuses.items() if k in self._jobs}
        self._save()
        self._seen = ClusterState(cluster=self.name, observed_at=self._t, nodes=nodes, pools=pools, jobs=jobs)
        self._seen_gen = self._gen
        return self._seen

    def dispatch(self, request: DispatchRequest) -> None:
        self._check("dispatch")
        self._advance(self._clock.now())
        if request.job_id in self._jobs:
            return  # adoption: the cluster already has it
        if request.pool is not None and request.pool not in self._pools:
            raise ProviderError(ErrorKind.INVALID, f"no node pool {request.pool!r}", cluster=self.name)
        self._jobs[request.job_id] = _Job(
            job_id=request.job_id, spec=request.spec.model_dump() if self._state_path else {}, pool=request.pool,
            hints=list(request.node_hints), dispatched_at=self._t, progress=request.progress,
        )
        self._specs[request.job_id] = request.spec
        self._gen += 1
        self.created.append(request.job_id)
        self._start_pending(self._t)
        self._save()

    def cancel(self, job_id: str, request_id: str) -> None:
        self._check("cancel")
        self._advance(self._clock.now())
        job = self._jobs.pop(job_id, None)
        self._statuses.pop(job_id, None)  # a job of the same id dispatched later starts from scratch
        if job is not None:
            self._gen += 1
            self._release(job)
            self._start_pending(self._t)
        self._save()

    def job_status(self, job_id: str) -> JobStatus | None:
        self._check("job_status")
        self._advance(self._clock.now())
        job = self._jobs.get(job_id)
        return self._status(job) if job else None

    def scale_pool(self, pool: str, desired_nodes: int, request_id: str) -> None:
        self._check("scale_pool")
        self._advance(self._clock.now())
        p = self._pools.get(pool)
        if p is None:
            raise ProviderError(ErrorKind.INVALID, f"no node pool {pool!r}", cluster=self.name, pool=pool)
        if not p.min_nodes <= desired_nodes <= p.max_nodes:
            raise ProviderError(ErrorKind.INVALID, f"size {desired_nodes} outside [{p.min_nodes}, {p.max_nodes}]",
                                cluster=self.name, pool=pool)
        self._desired[pool] = desired_nodes
        self._gen += 1
        self._reconcile_pool(p)
        self._save()

    def poll_errors(self) -> list[ProviderError]:
        errors, self._pending_errors = self._pending_errors, []
        return errors

    # ---- what the simulator and tests may ask --------------------------------------------------

    def next_event_at(self, *, pools_only: bool = False) -> float | None:
        """When something will next change on its own (a node ready, a job ending), if anything will; with
        `pools_only`, only on nodes of cloud pools."""
        if self._events_gen != self._gen:
            every: list[float] = []
            pools: list[float] = []
            for n in self._nodes.values():
                if n.ready_at > self._t + EPS:
                    every.append(n.ready_at)
                    if n.pool is not None:
                        pools.append(n.ready_at)
            for j in self._jobs.values():
                if j.finish_at is not None and j.finished_at is None:
                    every.append(j.finish_at)
                    if j.pool is not None:
                        pools.append(j.finish_at)
            self._events = (min(every, default=None), min(pools, default=None))
            self._events_gen = self._gen
        return self._events[1] if pools_only else self._events[0]

    def stuck_since(self) -> float | None:
        """Since when the longest-stuck job has been unschedulable here, if one is."""
        return min((j.unschedulable_since for j in self._jobs.values()
                    if j.unschedulable_since is not None and j.phase == _PENDING), default=None)

    def cordon(self, node: str) -> None:
        """Take a node out of scheduling (it keeps what runs on it), as `kubectl cordon` does."""
        self._cordoned.add(node)
        self._gen += 1
        self._save()

    def reclaim(self, node: str) -> None:
        """Take a node away as a spot reclaim does: its jobs fail as interrupted, and the pool, whose desired
        size is unchanged, boots a replacement."""
        self._advance(self._clock.now())
        n = self._nodes.pop(node)
        self._node_infos.pop(node, None)
        self._gen += 1
        for job in self._jobs.values():
            if node in job.nodes and job.finished_at is None:
                self._release(job)
                job.phase, job.finished_at, job.finish_at = JobPhase.FAILED.value, self._t, None
                job.interrupted, job.message = True, f"interrupted: node {node} was reclaimed"
                job.version += 1
        p = self._pools.get(n.pool or "")
        if p is not None:
            self._reconcile_pool(p)
        self._save()

    def inject_async_error(self, error: ProviderError) -> None:
        self._pending_errors.append(error)
        self._gen += 1

    # ---- internals -----------------------------------------------------------------------------

    def _check(self, call: str) -> None:
        if self.unreachable:
            raise ProviderError(ErrorKind.UNREACHABLE, "the cluster API does not answer", cluster=self.name)
        err = self.fail_next.pop(call, None)
        if err is not None:
            raise err

    def _add_node(self, p: PoolSpec, ready_at: float) -> None:
        self._seq += 1
        n = _Node(f"{self.name}-{p.name}-{self._seq:04d}", p.gpu_type, p.gpus_per_node, p.cpu_per_node,
                  p.memory_gib_per_node, ready_at=ready_at, pool=p.name)
        self._nodes[n.name] = n
        self._gen += 1

    def _reconcile_pool(self, p: PoolSpec) -> None:
        mine = [n for n in self._nodes.values() if n.pool == p.name]
        want = self._desired[p.name]
        for _ in range(want - len(mine)):
            self._add_node(p, ready_at=self._t + p.provisioning_delay_s)
        if len(mine) > want:
            # Shrink like a cloud autoscaler asked to remove nodes: never a node with work on it;
            # nodes still booting go first, then the newest idle ones.
            idle = [n for n in mine if not n.used and not self._bound_pending(n.name)]
            idle.sort(key=lambda n: (n.ready_at <= self._t, -n.ready_at))
            for n in idle[: len(mine) - want]:
                del self._nodes[n.name]
                self._node_infos.pop(n.name, None)
                self._gen += 1

    def _bound_pending(self, node: str) -> bool:
        return any(node in j.hints for j in self._jobs.values() if j.phase == JobPhase.PENDING.value)

    def _advance(self, now: float) -> None:
        while True:
            nxt = self.next_event_at()
            if nxt is None or nxt > now + EPS:
                break
            self._t = max(self._t, nxt)
            self._gen += 1  # a node became ready or a job ended
            for j in self._jobs.values():
                if j.finish_at is not None and j.finished_at is None and j.finish_at <= self._t + EPS:
                    j.finished_at = j.finish_at
                    j.phase = JobPhase.SUCCEEDED.value
                    j.version += 1
                    self._release(j)
            self._start_pending(self._t)
        self._t = max(self._t, now)
        if self._advanced_gen != self._gen:  # nothing changed since the last time: nothing to reconcile
            for p in self._pools.values():
                self._reconcile_pool(p)
            self._start_pending(self._t)
            self._advanced_gen = self._gen
        cutoff = self._t - self._retention_s
        old = [j.job_id for j in self._jobs.values() if j.finished_at is not None and j.finished_at < cutoff]
        for jid in old:
            del self._jobs[jid]
            self._specs.pop(jid, None)
            self._statuses.pop(jid, None)
        if old:
            self._gen += 1

    def _release(self, job: _Job) -> None:
        for name in job.nodes:
            node = self._nodes.get(name)
            if node is not None and node.used.pop(job.job_id, None) is not None:
                node.version += 1

    def _start_pending(self, t: float) -> None:
        for job in sorted((j for j in self._jobs.values() if j.phase == _PENDING),
                          key=lambda j: j.dispatched_at):
            spec = self._spec(job)
            chosen = self._fit(job, spec, t)
            if chosen is None:
                if job.unschedulable_since is None:  # as kube-scheduler marks a pod no node can take now
                    job.unschedulable_since = t
                    job.message = "0 nodes available: insufficient resources or no matching node"
                    job.version += 1
                    self._gen += 1
                continue
            job.unschedulable_since, job.message = None, ""
            job.version += 1
            self._gen += 1
            for n in chosen:
                n.used[job.job_id] = [spec.gpus, spec.cpu, spec.memory_gib]
                n.version += 1
            job.nodes = [n.name for n in chosen]
            job.phase = JobPhase.RUNNING.value
            job.started_at = t
            job.finish_at = t + max(1e-3, self._runtime(job.job_id, spec, chosen[0].gpu_type) * (1 - job.progress))

    def _spec(self, job: _Job) -> JobSpec:
        spec = self._specs.get(job.job_id)
        if spec is None:
            spec = self._specs[job.job_id] = JobSpec.model_validate(job.spec)
        return spec

    def _fit(self, job: _Job, spec: JobSpec, t: float) -> list[_Node] | None:
        allowed = set(spec.gpu_types)
        candidates = [
            n for n in self._nodes.values()
            if n.ready_at <= t + EPS and n.name not in self._cordoned and (job.pool is None or n.pool == job.pool)
            and (not allowed or n.gpu_type in allowed)
        ]
        # the solver's binding first, then the fullest node that fits (keeps whole nodes free for gangs)
        rank = {name: i for i, name in enumerate(job.hints)}
        candidates.sort(key=lambda n: (rank.get(n.name, len(rank)), n.free()[0], n.name))
        if spec.nodes > 1:
            whole = [n for n in candidates if not n.used and n.gpus >= spec.gpus and n.cpu >= spec.cpu
                     and n.memory_gib >= spec.memory_gib]
            return whole[: spec.nodes] if len(whole) >= spec.nodes else None
        for n in candidates:
            g, c, m = n.free()
            if g >= spec.gpus and c + EPS >= spec.cpu and m + EPS >= spec.memory_gib:
                return [n]
        return None

    def _node_info(self, n: _Node) -> NodeInfo:
        ready = n.ready_at <= self._t + EPS and n.name not in self._cordoned
        booting = n.ready_at > self._t + EPS
        key = (n.version, ready, booting)
        cached = self._node_infos.get(n.name)
        if cached is not None and cached[0] == key:
            return cached[1]
        g, c, m = n.free()
        info = NodeInfo(name=n.name, gpu_type=n.gpu_type, gpus=n.gpus, cpu=n.cpu, memory_gib=n.memory_gib,
                        free_gpus=int(round(g)), free_cpu=c, free_memory_gib=m, ready=ready, pool=n.pool,
                        ready_at=n.ready_at if booting else None, jobs=len(n.used))
        self._node_infos[n.name] = (key, info)
        return info

    def _pool_state(self, p: PoolSpec) -> PoolState:
        mine = [n for n in self._nodes.values() if n.pool == p.name]
        return PoolState(name=p.name, instance_type=p.instance_type, gpu_type=p.gpu_type,
                         gpus_per_node=p.gpus_per_node, desired_nodes=self._desired[p.name], nodes=len(mine),
                         ready_nodes=sum(1 for n in mine if n.ready_at <= self._t + EPS),
                         min_nodes=p.min_nodes, max_nodes=p.max_nodes, spot=p.spot)

    def _status(self, j: _Job) -> JobStatus:
        cached = self._statuses.get(j.job_id)
        if cached is not None and cached[0] == j.version:
            return cached[1]
        st = JobStatus(job_id=j.job_id, phase=JobPhase(j.phase), nodes=tuple(j.nodes), pool=j.pool,
                       started_at=j.started_at, finished_at=j.finished_at, message=j.message,
                       unschedulable_since=j.unschedulable_since, queue=self._spec(j).queue,
                       interrupted=j.interrupted)
        self._statuses[j.job_id] = (j.version, st)
        return st

    # ---- persistence ---------------------------------------------------------------------------

    def _save(self) -> None:
        if self._state_path is None:
            return
        data = {
            "t": self._t, "seq": self._seq, "desired": self._desired, "created": self.created,
            "cordoned": sorted(self._cordoned),
            "nodes": [asdict(n) for n in self._nodes.values()],
            "jobs": [asdict(j) for j in self._jobs.values()],
        }
        self._state_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self._state_path.parent, prefix=".sim-")
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._state_path)

    def _load(self) -> None:
        data = json.loads(self._state_path.read_text())
        self._t = data["t"]
        self._seq = data["seq"]
        self._desired = {p: data["desired"].get(p, self._pools[p].min_nodes) for p in self._pools}
        self.created = list(data["created"])
        self._cordoned = set(data.get("cordoned", ()))
        self._nodes = {n["name"]: _Node(**n) for n in data["nodes"]}
        self._jobs = {j["job_id"]: _Job(**j) for j in data["jobs"]}
