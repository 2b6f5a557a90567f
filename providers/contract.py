"""The provider contract: how the control loop sees and changes a member cluster, and what it may rely on.

A member cluster is two things: a Kubernetes API where jobs run, and (for a cloud cluster) a node-pool API
that grows and shrinks GPU node pools. Every provider — simulated, Kubernetes, EKS, GKE, AKS — implements
`ClusterProvider` and keeps these guarantees:

* **Passive observation.** `observe()` changes nothing in the cluster. It returns one `ClusterState`,
  a snapshot that is eventually consistent: a dispatch or scale request may take several observations to
  show, but once a job or node shows it does not vanish unless it really finished, was removed or failed.
* **Idempotence under a request id.** `dispatch`, `cancel` and `scale_pool` may be retried with the same
  arguments any number of times (after a timeout, or after the scheduler restarts mid-action) without a
  second effect: a job id is dispatched at most once per cluster (a second dispatch of a job the cluster
  already knows is adoption, not an error), cancelling a job that is gone succeeds, and `scale_pool` sets a
  desired size rather than adding to it.
* **Classified errors.** Synchronous failures raise `ProviderError` with an `ErrorKind`; asynchronous ones
  (a node that failed to launch, a stockout found while provisioning) are returned once by `poll_errors()`.
  The loop decides what to do from the kind alone: back off a throttled call, retry a transient one, cool
  off a pool that stocked out or hit its quota, mark a cluster unusable on an auth error.
* **No secrets in errors.** Messages never carry tokens, keys or signed URLs.
* **Prices are data.** Providers never quote prices; offers come from the price catalog.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from enum import Enum
from typing import Protocol, runtime_checkable

from spillover.scheduler.model import JobSpec


class ErrorKind(str, Enum):
    STOCKOUT = "stockout"  # the cloud has no capacity of that instance type there now
    QUOTA = "quota"  # an account or project limit stops the request
    THROTTLED = "throttled"  # rate limited: retry later with backoff
    AUTH = "auth"  # credentials missing or lacking a permission
    UNREACHABLE = "unreachable"  # the API did not answer
    INVALID = "invalid"  # the request was rejected as malformed; retrying will not help
    TRANSIENT = "transient"  # a 5xx or similar; retrying may help


class ProviderError(Exception):
    """A classified failure of a provider call or of an asynchronous cluster operation."""

    def __init__(self, kind: ErrorKind, message: str, *, cluster: str = "", pool: str | None = None,
                 at: float | None = None, request_id: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.cluster = cluster
        self.pool = pool
        self.at = at
        self.request_id = request_id

    def __str__(self) -> str:
        where = f"{self.cluster}/{self.pool}" if self.pool else self.cluster
        return f"{self.kind.value} on {where}: {self.message}" if where else f"{self.kind.value}: {self.message}"


class JobPhase(str, Enum):
    PENDING = "pending"  # accepted by the cluster, not running yet (waiting for a node or for capacity)
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class Clock(Protocol):
    """What a provider needs of the loop's clock (real or simulated)."""

    def now(self) -> float: ...


@dataclass(frozen=True)
class PoolSpec:
    """A cloud node pool as configured: hardware from the price catalog, bounds and boot time from the config."""

    name: str
    instance_type: str
    gpu_type: str
    gpus_per_node: int
    cpu_per_node: float
    memory_gib_per_node: float
    min_nodes: int
    max_nodes: int
    provisioning_delay_s: float
    spot: bool = False


@dataclass(frozen=True)
class NodeInfo:
    name: str
    gpu_type: str
    gpus: int
    cpu: float
    memory_gib: float
    free_gpus: int
    free_cpu: float
    free_memory_gib: float
    ready: bool = True
    pool: str | None = None  # node pool name for cloud nodes
    ready_at: float | None = None  # for a provisioning node: when it is expected to be ready
    jobs: int = 0  # Spillover jobs running on it


@dataclass(frozen=True)
class PoolState:
    name: str
    instance_type: str
    gpu_type: str
    gpus_per_node: int
    desired_nodes: int  # the size last asked for
    nodes: int  # nodes that exist, ready or provisioning
    ready_nodes: int
    min_nodes: int
    max_nodes: int
    # a smaller desired size removes idle nodes only. False when the cloud picks which instances go (EKS, GKE
    # and AKS do), so the loop shrinks such a pool only once every node above its minimum is idle
    removes_idle_first: bool = True
    spot: bool = False


@dataclass(frozen=True)
class JobStatus:
    job_id: str
    phase: JobPhase
    nodes: tuple[str, ...] = ()
    pool: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    message: str = ""
    unschedulable_since: float | None = None  # pending because no node can take it (not just still booting)
    queue: str | None = None  # as labelled on the workload, for recovery of jobs the store lost track of
    # FAILED because its node was taken away (a spot reclaim, a lost node), not by its own doing: worth a rerun
    interrupted: bool = False


@dataclass(frozen=True)
class ClusterState:
    """One observation of a cluster."""

    cluster: str
    observed_at: float
    nodes: tuple[NodeInfo, ...] = ()
    pools: tuple[PoolState, ...] = ()
    jobs: dict[str, JobStatus] = field(default_factory=dict)
    # optional signals (e.g. from Prometheus): name -> value for the cluster, and GPU utilization per node
    signals: dict[str, float] = field(default_factory=dict)
    gpu_utilization: dict[str, float] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()  # degraded but usable (e.g. Prometheus down): said once per cycle

    def pool(self, name: str) -> PoolState | None:
        return self._pools_by_name.get(name)

    @cached_property
    def _pools_by_name(self) -> dict[str, PoolState]:
        return {p.name: p for p in self.pools}

    @cached_property
    def busy_nodes_by_pool(self) -> dict[str, int]:
        """Pool name -> nodes of the pool running at least one Spillover job."""
        out: dict[str, int] = {}
        for n in self.nodes:
            if n.pool is not None and n.jobs > 0:
                out[n.pool] = out.get(n.pool, 0) + 1
        return out


@dataclass(frozen=True)
class DispatchRequest:
    job_id: str  # also the deterministic name of the workload in the cluster
    request_id: str  # idempotency key of the intended action
    spec: JobSpec
    pool: str | None = None  # cloud pool whose nodes the job must run on
    node_hints: tuple[str, ...] = ()  # the solver's binding; a provider may ignore it
    gpu_type: str | None = None  # the GPU type the solver chose; a provider pins the job to it
    # fraction of its work a checkpointable job did before it was preempted or interrupted: it resumes from its
    # checkpoint, and a provider tells it so (Kubernetes: the spillover/resume-from annotation and the
    # SPILLOVER_RESUME_FROM environment variable)
    progress: float = 0.0


@runtime_checkable
class ClusterProvider(Protocol):
    """One member cluster, as the control loop sees it. See the module docstring for the guarantees."""

    name: str

    def observe(self) -> ClusterState:
        """Return the cluster's nodes, pools and Spillover jobs. Raises ProviderError(UNREACHABLE, ...)
        when the cluster cannot be observed."""
        ...

    def dispatch(self, request: DispatchRequest) -> None:
        """Create the job in the cluster. A job id the cluster already knows is adopted, not duplicated."""
        ...

    def cancel(self, job_id: str, request_id: str) -> None:
        """Stop and remove the job. Succeeds if the job is already gone."""
        ...

    def job_status(self, job_id: str) -> JobStatus | None:
        """The job's status, or None if the cluster does not know it."""
        ...

    def scale_pool(self, pool: str, desired_nodes: int, request_id: str) -> None:
        """Set the desired size of a node pool (clamped by nobody: the caller keeps min <= n <= max).
        On-prem clusters have no pools and raise ProviderError(INVALID, ...)."""
        ...

    def poll_errors(self) -> list[ProviderError]:
        """Asynchronous errors since the last call, each returned once."""
        ...
