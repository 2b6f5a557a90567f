"""Settings of the Kubernetes provider: how to reach one cluster's API and how to shape the Jobs it creates."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

# Labels and annotations Spillover puts on what it creates; the cache and the job mapping read them back.
MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "spillover"
JOB_ID_LABEL = "spillover/job-id"
QUEUE_LABEL = "spillover/queue"
REQUEST_ID_ANNOTATION = "spillover/request-id"
RUNTIME_ANNOTATION = "spillover/estimated-runtime-s"
RESUME_ANNOTATION = "spillover/resume-from"
HOSTNAME_LABEL = "kubernetes.io/hostname"


@dataclass(frozen=True)
class KubeSettings:
    """The provider's view of a cluster's `kubernetes:` config section (same field names and defaults)."""

    kubeconfig: str | None = None  # None: $KUBECONFIG or ~/.kube/config
    context: str | None = None  # None: the kubeconfig's current context
    in_cluster: bool = False  # use the pod's service account instead of a kubeconfig
    namespace_per_queue: bool = True  # Jobs go to f"{namespace}-{queue}", created if missing
    namespace: str = "spillover"
    gpu_resource: str = "nvidia.com/gpu"
    gpu_product_label: str = "nvidia.com/gpu.product"
    gpu_product_aliases: Mapping[str, str] = field(default_factory=dict)  # label value -> GPU type
    pool_label: str | None = None  # node label naming the node pool (e.g. eks.amazonaws.com/nodegroup)
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    ttl_seconds_after_finished: int = 86400
    request_timeout_s: float = 10.0

    @classmethod
    def of(cls, source: Any) -> KubeSettings:
        """Copy the same-named attributes of any object (e.g. the scheduler's KubernetesConfig)."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            if hasattr(source, f.name):
                values[f.name] = getattr(source, f.name)
        if "gpu_product_aliases" in values:
            values["gpu_product_aliases"] = dict(values["gpu_product_aliases"] or {})
        if "node_selector" in values:
            values["node_selector"] = dict(values["node_selector"] or {})
        if "tolerations" in values:
            values["tolerations"] = tuple(dict(t) for t in values["tolerations"] or ())
        return cls(**values)

    def namespace_for(self, queue: str) -> str:
        return f"{self.namespace}-{queue}" if self.namespace_per_queue else self.namespace


@dataclass(frozen=True)
class PoolInfo:
    """A node pool as configured (the cloud's node-pool API, if any, lives in another provider).

    The Kubernetes provider counts the pool's nodes by `KubeSettings.pool_label`; a node the GPU feature
    discovery has not labelled yet takes the pool's GPU type.
    """

    name: str
    instance_type: str = ""
    gpu_type: str = ""
    gpus_per_node: int = 0
    min_nodes: int = 0
    max_nodes: int = 0
