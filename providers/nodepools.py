"""The node-pool contract: how Spillover reads and sets the size of one cloud cluster's GPU node pools (EKS node
groups, GKE node pools, AKS agent pools), whatever the cloud.

An adapter (`providers/eks.py`, `gke.py`, `aks.py`) implements `NodePoolAPI` for one managed cluster and keeps
these guarantees, on top of the cluster contract's (`providers/contract.py`):

* **Sizes, not deltas.** `set_size` asks for a desired size; calling it again with the same size — a retry
  after a timeout, or after the scheduler restarted mid-action — starts nothing new.
* **Accepted, not done.** `set_size` returns once the cloud accepted the request. The operation it starts
  (a nodegroup update, a GKE operation, an ARM long-running operation) is followed by later calls, never
  waited on in the loop's thread: its failure surfaces once through `poll_errors()`.
* **Classified errors.** Every failure is a `ProviderError` whose kind the loop acts on: STOCKOUT (the cloud has
  no such instances there now), QUOTA, THROTTLED (after the SDK's own backoff and jitter gave up), AUTH (with
  the permission that was missing, when the cloud names it), UNREACHABLE, TRANSIENT (5xx), INVALID (no such
  pool, a size outside the pool's limits). Errors about one pool carry its name in `pool`.
* **No secrets.** Credentials come from each SDK's standard chain; no message carries a token or key.

Prices are not the adapter's business: they reach the solver from the price catalog.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from spillover.providers.contract import ProviderError


@dataclass(frozen=True)
class PoolSize:
    """A node pool as its cloud reports it."""

    name: str
    desired: int | None  # the size the cloud is converging to; None when the API does not say (GKE)
    min_size: int | None = None  # the cloud-side bounds of the pool (EKS scalingConfig, GKE/AKS autoscaling)
    max_size: int | None = None
    instance_type: str | None = None
    status: str = ""  # the cloud's own status word (ACTIVE, RUNNING, Succeeded, ...)
    updating: bool = False  # a resize or another operation is under way


@runtime_checkable
class NodePoolAPI(Protocol):
    """The node pools of one managed cluster. See the module docstring for the guarantees."""

    cloud: str  # "aws", "gcp" or "azure"

    def get_pool(self, pool: str) -> PoolSize:
        """The pool's current size and state. Raises ProviderError."""
        ...

    def set_size(self, pool: str, desired: int, request_id: str) -> None:
        """Ask the cloud for `desired` nodes in the pool; returns when the request is accepted. Raises
        ProviderError (STOCKOUT or QUOTA when the cloud refuses at once)."""
        ...

    def poll_errors(self) -> list[ProviderError]:
        """Failures found since the last call — a resize operation that failed, instances that could not
        launch — each returned once, with `pool` set."""
        ...

    def close(self) -> None:
        """Release the SDK client's connections."""
        ...
