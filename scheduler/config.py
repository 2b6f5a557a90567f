"""The Spillover config file: store, loop timing, prices, queues, on-prem clusters, cloud node pools, burst policy."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterator, Mapping
from importlib import resources
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from spillover.providers.catalog import Offering, PriceCatalog
from spillover.scheduler.errors import (
    ConfigError,
    UnknownClusterError,
    UnknownQueueError,
    custom_error,
    describe_value,
    format_validation_error,
    validate_with_extra_errors,
)
from spillover.scheduler.jobspec import read_text, read_yaml_documents
from spillover.scheduler.model import DNS_LABEL, Cloud, ClusterKind
from spillover.scheduler.teams import Budget, FairShare, Preemption, TeamConfig, check_teams

API_VERSION = "spillover/v1alpha1"
KIND = "SpilloverConfig"
# Shipped inside the package (the source tree's config/ folder), so an installed wheel finds them too.
BUNDLED_DATA = Path(str(resources.files("spillover.config")))
EXAMPLE_CONFIG = BUNDLED_DATA / "spillover.example.yaml"

# (cloud, region) of the cloud cluster whose pools are being validated; pools look their instance
# types up there. Pydantic passes no parent values down, and the validation context is shared.
_location: ContextVar[tuple[Any, Any] | None] = ContextVar("spillover_pool_location", default=None)


def _catalog(info: ValidationInfo) -> PriceCatalog | None:
    """The catalog to check against: the caller's (None when it failed to load), else the bundled one."""
    if isinstance(info.context, Mapping) and "catalog" in info.context:
        return info.context["catalog"]
    return PriceCatalog.bundled()


def _dns_label(value: str) -> str:
    if not DNS_LABEL.match(value):
        raise ValueError(
            f"must be a DNS label: lower-case letters, digits and '-', starting and ending with a letter "
            f"or digit (got {describe_value(value)})"
        )
    return value


DnsLabel = Annotated[str, Field(min_length=1, max_length=63), AfterValidator(_dns_label)]
NonEmpty = Annotated[str, Field(min_length=1)]


class _Model(BaseModel):
    # Frozen: one config object is shared by the loop, the CLI and the providers for a whole run.
    model_config = ConfigDict(extra="forbid", frozen=True)


def _duplicates(items: Any, what: str, section: str) -> list[Any]:
    """Errors for list items whose `name` repeats an earlier one, read from the raw input so they are
    reported together with every other error."""
    if not isinstance(items, list):
        return []
    first: dict[str, int] = {}
    errors = []
    for index, item in enumerate(items):
        name = item.get("name") if isinstance(item, Mapping) else None
        if not isinstance(name, str):
            continue
        if name in first:
            message = f"duplicate {what} name '{name}' (also {section}[{first[name]}]); names must be unique"
            errors.append(custom_error((section, index, "name"), message, name))
        first.setdefault(name, index)
    return errors


class StoreConfig(_Model):
    """Where the global queue lives."""

    # repr=False: a PostgreSQL URL may carry a password, and configs end up in log lines.
    url: str = Field(
        default="sqlite:///spillover.db",
        repr=False,
        description="SQLAlchemy URL: sqlite:///FILE or postgresql+psycopg://USER:PASSWORD@HOST/DB",
    )

    @field_validator("url")
    @classmethod
    def _supported_database(cls, url: str) -> str:
        expected = "a SQLAlchemy URL like sqlite:///spillover.db or postgresql+psycopg://user:pass@host/db"
        try:
            parsed = make_url(url)
        except ArgumentError:
            raise ValueError(f"must be {expected}") from None
        backend, driver = parsed.get_backend_name(), parsed.get_driver_name()
        if backend == "sqlite":
            return url
        if backend == "postgresql" and "+" not in parsed.drivername:
            # psycopg (v3) is the driver Spillover ships with; SQLAlchemy would otherwise pick psycopg2.
            return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
        if backend == "postgresql" and driver == "psycopg":
            return url
        raise ValueError(f"must be {expected} (got the {parsed.drivername} dialect)")


class LoopConfig(_Model):
    """Timing of the control loop."""

    interval_s: PositiveFloat = Field(default=30.0, description="seconds between cycles")
    solver_time_limit_s: PositiveFloat = Field(default=2.0, description="time the solver may take per cycle")
    solver_work_limit: PositiveFloat | None = Field(
        default=None, description="bound each decision by this much solver work (units of about a second) instead of "
        "solver_time_limit_s: the same queue then always gets the same plan, however loaded the machine; replays "
        "use it, production keeps the wall-clock limit")
    solver_bound: bool = Field(default=True, description="compute the LP bound each cycle, logged as the plan's "
                               "gap; replays turn it off to save time")
    unavailable_after: Annotated[int, Field(ge=1)] = Field(
        default=3, description="failed observations in a row after which a cluster is marked unavailable"
    )
    requeue_grace_s: NonNegativeFloat = Field(
        default=600.0,
        description="how long an unavailable cluster's jobs stay bound to it before they are requeued (once)",
    )
    unschedulable_grace_s: NonNegativeFloat = Field(
        default=300.0,
        description="how long a dispatched job may sit unschedulable in its cluster before it is requeued elsewhere",
    )


class ApiConfig(_Model):
    """`spillover serve`: where the HTTP API listens and how much one request may carry."""

    host: NonEmpty = Field(default="127.0.0.1", description="address to listen on")
    port: Annotated[int, Field(ge=1, le=65535)] = 8080
    max_body_bytes: Annotated[int, Field(ge=1024)] = Field(
        default=1024 * 1024, description="a request body larger than this is refused (413) before it is read whole")
    max_jobs_per_request: Annotated[int, Field(ge=1)] = Field(default=1000, description="jobs one submit may carry")


class KubernetesConfig(_Model):
    """How to reach a cluster's Kubernetes API and shape the Jobs Spillover creates there."""

    kubeconfig: str | None = Field(default=None, description="kubeconfig path; null: $KUBECONFIG or ~/.kube/config")
    context: str | None = Field(default=None, description="kubeconfig context; null: the current context")
    in_cluster: bool = Field(default=False, description="use the pod's service account instead of a kubeconfig")
    namespace_per_queue: bool = Field(default=True, description="one namespace per queue, created if missing")
    namespace: DnsLabel = Field(default="spillover", description="the namespace, or the prefix of per-queue ones")
    gpu_resource: NonEmpty = "nvidia.com/gpu"
    gpu_product_label: NonEmpty = Field(default="nvidia.com/gpu.product", description="node label with the GPU type")
    gpu_product_aliases: dict[NonEmpty, NonEmpty] = Field(
        default_factory=dict,
        description="GPU product label value -> GPU type, for products the built-in names do not cover "
        "(e.g. NVIDIA-A100-SXM4-80GB is read as A100 without one)",
    )
    pool_label: str | None = Field(
        default=None,
        description="node label naming the node pool, e.g. eks.amazonaws.com/nodegroup, "
        "cloud.google.com/gke-nodepool, kubernetes.azure.com/agentpool",
    )
    node_selector: dict[str, str] = Field(default_factory=dict, description="added to every Job's pod template")
    tolerations: list[dict[str, Any]] = Field(
        default_factory=list, description="tolerations every Job carries (e.g. for tainted GPU nodes)"
    )
    ttl_seconds_after_finished: Annotated[int, Field(ge=0)] = Field(
        default=86400, description="finished Jobs are removed by Kubernetes after this long"
    )
    request_timeout_s: PositiveFloat = 10.0


DEFAULT_PROMQL = {
    "gpu_utilization": "avg by (Hostname) (DCGM_FI_DEV_GPU_UTIL)",
    "pending_gpu_pods": 'sum(kube_pod_status_phase{phase="Pending"} * on(namespace, pod) group_left() '
    '(sum by (namespace, pod) (kube_pod_container_resource_requests{resource="nvidia_com_gpu"}) > 0))',
}


class PrometheusConfig(_Model):
    """Optional utilization and queue signals for one cluster."""

    url: NonEmpty = Field(description="base URL of the Prometheus HTTP API, e.g. http://prometheus:9090")
    timeout_s: PositiveFloat = 5.0
    queries: dict[NonEmpty, NonEmpty] = Field(
        default_factory=lambda: dict(DEFAULT_PROMQL),
        description="signal name -> PromQL; gpu_utilization (per node, %) and pending_gpu_pods are understood",
    )


class PricesConfig(_Model):
    catalog: Path | None = Field(
        default=None,
        description="CSV price catalog, relative to the config file; null means the bundled catalog",
    )


class QueueConfig(_Model):
    """A queue jobs are submitted to; usually one per team."""

    name: DnsLabel
    team: NonEmpty | None = Field(default=None, description="team charged in cost reports; defaults to the name")
    value_of_time_per_gpu_hour: NonNegativeFloat | None = Field(
        default=None, description="dollars one GPU-hour of waiting is worth here; null means the policy's"
    )
    value_of_time_per_job_hour: NonNegativeFloat | None = Field(
        default=None, description="dollars one hour of a job's waiting is worth here, whatever its size; "
        "when set, used instead of the per-GPU-hour value"
    )
    budget: Budget | None = Field(default=None, description="dollars per period for this queue, inside its team's")

    @model_validator(mode="before")
    @classmethod
    def _team_defaults_to_name(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and data.get("team") is None and isinstance(data.get("name"), str):
            return {**data, "team": data["name"]}
        return data


Provider = Literal["simulated", "kubernetes"]


def _needs_kubernetes_section(cluster: Any) -> Any:
    if cluster.provider == "kubernetes" and cluster.kubernetes is None:
        raise ValueError("kubernetes: required with provider: kubernetes (at least {context: NAME} or "
                         "{in_cluster: true})")
    return cluster


class NodeGroup(_Model):
    """Identical on-prem nodes."""

    count: Annotated[int, Field(ge=1)]
    gpus_per_node: Annotated[int, Field(ge=1, le=64)]
    gpu_type: NonEmpty
    cpu_per_node: PositiveFloat
    memory_gib_per_node: PositiveFloat


class OnPremCluster(_Model):
    name: DnsLabel
    kind: Literal[ClusterKind.ONPREM]
    provider: Provider = "simulated"
    kubernetes: KubernetesConfig | None = Field(default=None, description="required with provider: kubernetes")
    prometheus: PrometheusConfig | None = None
    gpu_hour_cost: NonNegativeFloat = Field(default=0.0, description="amortized dollars per GPU-hour")
    node_groups: Annotated[list[NodeGroup], Field(min_length=1)]

    @property
    def total_gpus(self) -> int:
        return sum(g.count * g.gpus_per_node for g in self.node_groups)

    @property
    def total_nodes(self) -> int:
        return sum(g.count for g in self.node_groups)

    @property
    def gpu_types(self) -> set[str]:
        return {g.gpu_type for g in self.node_groups}

    @model_validator(mode="after")
    def _kubernetes_section(self) -> Any:
        return _needs_kubernetes_section(self)


# NodePool fields the catalog supplies, with the Offering attribute each comes from.
_FROM_CATALOG = {
    "gpu_type": "gpu_type",
    "gpus_per_node": "gpus",
    "cpu_per_node": "vcpus",
    "memory_gib_per_node": "memory_gib",
}


def _pool_offer(info: ValidationInfo, instance_type: Any, spot: bool) -> Offering | None:
    """The catalog's offering for a pool being validated inside a cloud cluster, or None when there is
    nothing to check against (no catalog, pool outside a cluster, or a cloud/region already reported)."""
    where, catalog = _location.get(), _catalog(info)
    if where is None or catalog is None or not isinstance(instance_type, str):
        return None
    cloud, region = where
    try:
        return catalog.offer(cloud, region, instance_type, spot)
    except LookupError:
        return None


class NodePool(_Model):
    """A cloud node pool (EKS node group, GKE node pool, AKS agent pool) of one instance type.

    Hardware and price come from the price catalog; given here, hardware must agree with it, and
    `price_per_hour` overrides it (a negotiated discount, say).
    """

    name: DnsLabel
    instance_type: NonEmpty
    spot: bool = False
    min_nodes: Annotated[int, Field(ge=0)] = 0
    max_nodes: Annotated[int, Field(ge=0)]
    provisioning_delay_s: NonNegativeFloat = Field(default=300.0, description="seconds from scale-up to a ready node")
    provisioning_timeout_s: PositiveFloat | None = Field(
        default=None,
        description="a scale-up whose nodes are not ready after this long counts as failed: its jobs go to the "
        "next best target and the pool is left alone for a while; null: provisioning_delay_s + 600",
    )
    gpu_type: NonEmpty | None = None
    gpus_per_node: Annotated[int, Field(ge=1)] | None = None
    cpu_per_node: PositiveFloat | None = None
    memory_gib_per_node: PositiveFloat | None = None
    price_per_hour: NonNegativeFloat | None = Field(default=None, description="dollars per node-hour")

    _cluster: str = PrivateAttr(default="")

    @property
    def id(self) -> str:
        """Unique across the config: "<cluster>/<pool>"."""
        return f"{self._cluster}/{self.name}"

    @property
    def cluster_name(self) -> str:
        return self._cluster

    @property
    def provisioning_timeout(self) -> float:
        return self.provisioning_timeout_s if self.provisioning_timeout_s is not None else self.provisioning_delay_s + 600

    @property
    def gpus_at_max(self) -> int:
        return self.max_nodes * (self.gpus_per_node or 0)

    @model_validator(mode="before")
    @classmethod
    def _fill_from_catalog(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, Mapping):
            return data
        spot = data.get("spot", False)
        hardware = _pool_offer(info, data.get("instance_type"), False)
        priced = _pool_offer(info, data.get("instance_type"), spot) if isinstance(spot, bool) else None
        filled = dict(data)
        for field, attr in _FROM_CATALOG.items():
            if hardware is not None and filled.get(field) is None:
                filled[field] = getattr(hardware, attr)
        if priced is not None and filled.get("price_per_hour") is None:
            filled["price_per_hour"] = priced.price_per_hour
        return filled

    @field_validator("instance_type")
    @classmethod
    def _listed(cls, instance_type: str, info: ValidationInfo) -> str:
        where, catalog = _location.get(), _catalog(info)
        if where is not None and catalog is not None and where[1] in catalog.regions(where[0]):
            try:
                catalog.offer(where[0], where[1], instance_type, False)
            except LookupError as exc:
                raise ValueError(str(exc)) from None
        return instance_type

    @field_validator("spot")
    @classmethod
    def _spot_priced(cls, spot: bool, info: ValidationInfo) -> bool:
        instance_type = info.data.get("instance_type")
        if spot and _pool_offer(info, instance_type, False) and not _pool_offer(info, instance_type, True):
            cloud, region = _location.get() or ("", "")
            raise ValueError(f"no spot price listed for {instance_type} in {cloud} {region}; use spot: false")
        return spot

    @field_validator("max_nodes")
    @classmethod
    def _not_below_min(cls, max_nodes: int, info: ValidationInfo) -> int:
        min_nodes = info.data.get("min_nodes")
        if min_nodes is not None and max_nodes < min_nodes:
            raise ValueError(f"must be at least min_nodes ({min_nodes}) (got {max_nodes})")
        return max_nodes

    @field_validator(*_FROM_CATALOG)
    @classmethod
    def _agrees_with_catalog(cls, value: Any, info: ValidationInfo) -> Any:
        instance_type = info.data.get("instance_type")
        offer = _pool_offer(info, instance_type, False)
        if value is None or offer is None:
            return value
        listed = getattr(offer, _FROM_CATALOG[info.field_name])
        same = value == listed if isinstance(value, str) else math.isclose(value, listed, rel_tol=1e-9)
        if not same:
            raise ValueError(
                f"must match the price catalog, which lists {listed} for {instance_type} (got {describe_value(value)});"
                " leave it out to take the catalog's"
            )
        return value


class EksConfig(_Model):
    """The EKS cluster whose managed node groups are the pools (each pool's name is its node group's name).
    Credentials come from boto3's standard chain: environment, shared profile, IRSA, instance role."""

    cluster_name: NonEmpty = Field(description="the EKS cluster's name")
    profile: str | None = Field(default=None, description="AWS shared-config profile; null: the default chain")
    endpoint_url: str | None = Field(default=None, description="EKS API endpoint, e.g. a VPC endpoint; null: public")
    timeout_s: PositiveFloat = 20.0
    max_attempts: Annotated[int, Field(ge=1, le=10)] = Field(
        default=4, description="attempts per call, with botocore's backoff and jitter on throttling and 5xx")


class GkeConfig(_Model):
    """The GKE cluster whose node pools are the pools. Credentials: Application Default Credentials."""

    project: NonEmpty
    location: NonEmpty = Field(description="the cluster's zone or region")
    cluster_name: NonEmpty
    endpoint: str | None = Field(default=None, description="container API endpoint; null: container.googleapis.com")
    timeout_s: PositiveFloat = 20.0


class AksConfig(_Model):
    """The AKS cluster whose agent pools are the pools. Credentials: azure-identity's DefaultAzureCredential."""

    subscription_id: NonEmpty
    resource_group: NonEmpty
    cluster_name: NonEmpty
    base_url: str | None = Field(default=None, description="ARM endpoint, for sovereign clouds; null: public Azure")
    timeout_s: PositiveFloat = 20.0


# The node-pool API section each cloud takes, and the node label its nodes carry with their pool's name.
NODE_POOL_API = {"aws": "eks", "gcp": "gke", "azure": "aks"}
POOL_LABEL = {"aws": "eks.amazonaws.com/nodegroup", "gcp": "cloud.google.com/gke-nodepool",
              "azure": "kubernetes.azure.com/agentpool"}


class CloudCluster(_Model):
    """A managed Kubernetes cluster (EKS, GKE, AKS) whose GPU node pools Spillover scales."""

    name: DnsLabel
    kind: Literal[ClusterKind.CLOUD]
    provider: Provider = "simulated"
    kubernetes: KubernetesConfig | None = Field(default=None, description="required with provider: kubernetes")
    prometheus: PrometheusConfig | None = None
    cloud: Cloud
    region: NonEmpty
    pools: Annotated[list[NodePool], Field(min_length=1)]
    eks: EksConfig | None = Field(default=None, description="cloud: aws with provider: kubernetes")
    gke: GkeConfig | None = Field(default=None, description="cloud: gcp with provider: kubernetes")
    aks: AksConfig | None = Field(default=None, description="cloud: azure with provider: kubernetes")

    @property
    def node_pool_api(self) -> EksConfig | GkeConfig | AksConfig | None:
        return getattr(self, NODE_POOL_API[self.cloud.value])

    @model_validator(mode="wrap")
    @classmethod
    def _pools_see_location(cls, data: Any, handler: Any, info: ValidationInfo) -> Any:
        location = (data.get("cloud"), data.get("region")) if isinstance(data, Mapping) else None
        token = _location.set(location)
        try:
            raw_pools = data.get("pools") if isinstance(data, Mapping) else None
            cluster = validate_with_extra_errors(handler, data, _duplicates(raw_pools, "pool", "pools"), cls.__name__)
        finally:
            _location.reset(token)
        for pool in cluster.pools:
            pool._cluster = cluster.name
        return cluster

    @field_validator("region")
    @classmethod
    def _priced_region(cls, region: str, info: ValidationInfo) -> str:
        cloud, catalog = info.data.get("cloud"), _catalog(info)
        if cloud is not None and catalog is not None:
            regions = catalog.regions(cloud)
            if region not in regions:
                raise ValueError(
                    f"no prices for {cloud.value} region '{region}' in the catalog; "
                    f"regions listed for {cloud.value}: {', '.join(regions) or 'none'}"
                )
        return region

    @property
    def max_gpus(self) -> int:
        return sum(p.gpus_at_max for p in self.pools)

    @model_validator(mode="after")
    def _kubernetes_section(self) -> Any:
        _needs_kubernetes_section(self)
        wanted = NODE_POOL_API[self.cloud.value]
        for section in NODE_POOL_API.values():
            if section != wanted and getattr(self, section) is not None:
                raise ValueError(f"{section}: not for a {self.cloud.value} cluster; a {self.cloud.value} cluster's "
                                 f"node pools are set in {wanted}:")
        if self.provider == "kubernetes":
            if getattr(self, wanted) is None:
                example = {"eks": "{cluster_name: NAME}", "gke": "{project: P, location: L, cluster_name: NAME}",
                           "aks": "{subscription_id: S, resource_group: RG, cluster_name: NAME}"}[wanted]
                raise ValueError(f"{wanted}: required for a {self.cloud.value} cluster with provider: kubernetes "
                                 f"(at least {example})")
            if self.kubernetes is not None and self.kubernetes.pool_label is None:
                # the model is frozen once built; this is still part of building it
                object.__setattr__(self, "kubernetes",
                                   self.kubernetes.model_copy(update={"pool_label": POOL_LABEL[self.cloud.value]}))
        return self


Cluster = Annotated[OnPremCluster | CloudCluster, Field(discriminator="kind")]


def _known_region(region: str, info: ValidationInfo) -> str:
    catalog = _catalog(info)
    if catalog is not None:
        known = sorted({r for c in catalog.clouds() for r in catalog.regions(c)})
        if region not in known:
            raise ValueError(f"unknown region '{region}'; regions in the price catalog: {', '.join(known)}")
    return region


class BurstPolicy(_Model):
    """When and where jobs may burst to the cloud, and what waiting is worth."""

    allowed_clouds: list[Cloud] = Field(default_factory=lambda: list(Cloud))
    allowed_regions: list[Annotated[str, AfterValidator(_known_region)]] = Field(
        default_factory=list, description="empty means any region"
    )
    max_cloud_gpus: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="GPUs in the cloud at once, all pools together; null means no cap"
    )
    value_of_time_per_gpu_hour: NonNegativeFloat = Field(
        default=4.0, description="dollars one GPU-hour of waiting is worth"
    )
    value_of_time_per_job_hour: NonNegativeFloat | None = Field(
        default=None,
        description="dollars one hour of a job's waiting is worth, whatever its size; when set, used instead of "
        "value_of_time_per_gpu_hour (so a small job's wait counts as much as a big one's, as in average JCT)",
    )
    scale_down_idle_s: NonNegativeFloat = Field(
        default=600.0, description="seconds an idle cloud pool waits before shrinking to min_nodes"
    )
    spot_for_checkpointable: bool = True
    spot_for_non_checkpointable: bool = False
    onprem_first: bool = Field(
        default=True,
        description="use free on-prem capacity before bursting; on-prem gpu_hour_cost then only feeds cost "
        "reports. false: the solver weighs gpu_hour_cost against cloud prices",
    )

    def allows(self, cloud: Cloud | str, region: str) -> bool:
        return Cloud(cloud) in self.allowed_clouds and (not self.allowed_regions or region in self.allowed_regions)

    def allows_spot(self, checkpointable: bool) -> bool:
        return self.spot_for_checkpointable if checkpointable else self.spot_for_non_checkpointable


class SpilloverConfig(_Model):
    """Everything Spillover reads from its config file."""

    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True)

    api_version: Literal["spillover/v1alpha1"] = Field(default=API_VERSION, alias="apiVersion")
    kind: Literal["SpilloverConfig"] = KIND
    store: StoreConfig = Field(default_factory=StoreConfig)
    loop: LoopConfig = Field(default_factory=LoopConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    prices: PricesConfig = Field(default_factory=PricesConfig)
    gpu_speeds: dict[NonEmpty, PositiveFloat] = Field(
        default_factory=dict, description="throughput relative to speed 1.0; a GPU type not listed is 1.0"
    )
    queues: Annotated[list[QueueConfig], Field(min_length=1)]
    clusters: Annotated[list[Cluster], Field(min_length=1)]
    policy: BurstPolicy = Field(default_factory=BurstPolicy)
    teams: list[TeamConfig] = Field(
        default_factory=list, description="quotas, cohorts, fair-share weights and budgets of the teams queues name")
    fair_share: FairShare = Field(default_factory=FairShare)
    preemption: Preemption = Field(default_factory=Preemption)

    _prices: PriceCatalog | None = PrivateAttr(default=None)

    @model_validator(mode="wrap")
    @classmethod
    def _unique_names(cls, data: Any, handler: Any) -> Any:
        extra = []
        if isinstance(data, Mapping):
            extra = _duplicates(data.get("queues"), "queue", "queues") + _duplicates(
                data.get("clusters"), "cluster", "clusters"
            ) + _duplicates(data.get("teams"), "team", "teams")
        config = validate_with_extra_errors(handler, data, extra, cls.__name__)
        team_errors = check_teams(config)
        if team_errors:
            raise ValidationError.from_exception_data(cls.__name__, team_errors)
        return config

    @property
    def catalog(self) -> PriceCatalog:
        """The price catalog this config was checked against."""
        return self._prices or PriceCatalog.bundled()

    def queue(self, name: str) -> QueueConfig:
        for queue in self.queues:
            if queue.name == name:
                return queue
        raise UnknownQueueError(name, [q.name for q in self.queues])

    def team(self, name: str) -> TeamConfig | None:
        """The team's entry under teams:, or None for a team with no quota, weight or budget of its own."""
        return next((t for t in self.teams if t.name == name), None)

    def cluster(self, name: str) -> OnPremCluster | CloudCluster:
        for cluster in self.clusters:
            if cluster.name == name:
                return cluster
        raise UnknownClusterError(name, [c.name for c in self.clusters])

    @property
    def onprem_clusters(self) -> list[OnPremCluster]:
        return [c for c in self.clusters if isinstance(c, OnPremCluster)]

    @property
    def cloud_clusters(self) -> list[CloudCluster]:
        return [c for c in self.clusters if isinstance(c, CloudCluster)]

    def pools(self) -> Iterator[NodePool]:
        for cluster in self.cloud_clusters:
            yield from cluster.pools

    def value_of_time(self, queue_name: str, gpus: int = 1) -> float:
        """Dollars one GPU-hour of waiting is worth for a job of this queue with `gpus` GPUs in all."""
        q = self.queue(queue_name)
        if q.value_of_time_per_gpu_hour is not None:
            return q.value_of_time_per_gpu_hour
        per_job = q.value_of_time_per_job_hour if q.value_of_time_per_job_hour is not None else (
            self.policy.value_of_time_per_job_hour)
        if per_job is not None:
            return per_job / max(1, gpus)
        return self.policy.value_of_time_per_gpu_hour

    def speed(self, gpu_type: str) -> float:
        return self.gpu_speeds.get(gpu_type, 1.0)

    def gpu_types(self) -> set[str]:
        """Every GPU type some cluster or pool offers."""
        types = {t for c in self.onprem_clusters for t in c.gpu_types}
        return types | {p.gpu_type for p in self.pools() if p.gpu_type}


def _prices_for(data: Mapping[str, Any], base_dir: Path) -> tuple[PriceCatalog | None, list[str]]:
    """The catalog named under prices.catalog (the bundled one when absent), or None and why not."""
    prices = data.get("prices")
    path = prices.get("catalog") if isinstance(prices, Mapping) else None
    if path is None or not isinstance(path, str):
        return PriceCatalog.bundled(), []  # a wrong type is reported by validation
    try:
        return PriceCatalog.load(base_dir / Path(path).expanduser()), []
    except ValueError as exc:
        return None, [f"prices.catalog: {exc}"]


def parse_config(
    data: Any, source: str = "<config>", catalog: PriceCatalog | None = None, *, base_dir: Path | None = None
) -> SpilloverConfig:
    """A checked config from already-parsed YAML; every problem at once in one ConfigError.

    `catalog` overrides prices.catalog (tests pin one); relative catalog paths are read from `base_dir`,
    by default the directory of `source`.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(
            source, [f"must be a mapping with apiVersion: {API_VERSION} and kind: {KIND} (got {describe_value(data)})"]
        )
    errors: list[str] = []
    if catalog is None:
        catalog, errors = _prices_for(data, base_dir if base_dir is not None else Path(source).parent)
    try:
        config = SpilloverConfig.model_validate(data, context={"catalog": catalog})
    except ValidationError as exc:
        errors += format_validation_error(exc, model=SpilloverConfig)
    if errors:
        raise ConfigError(source, errors)
    config._prices = catalog
    return config


def load_config(path: Path | str, catalog: PriceCatalog | None = None) -> SpilloverConfig:
    """Read and check a config file; any problem is a ConfigError of one line naming the file."""
    source = str(path)
    try:
        docs = read_yaml_documents(read_text(path))
    except ValueError as exc:
        raise ConfigError(source, [str(exc)]) from None
    if len(docs) != 1:
        found = "nothing" if not docs else f"{len(docs)} YAML documents"
        raise ConfigError(source, [f"expected one {KIND} document (found {found}); see {EXAMPLE_CONFIG.name}"])
    return parse_config(docs[0], source, catalog, base_dir=Path(path).parent)


def json_schema() -> dict[str, Any]:
    return SpilloverConfig.model_json_schema()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spillover.scheduler.config", description=__doc__)
    parser.add_argument("--schema", action="store_true", help="print the JSON schema of the config file")
    parser.add_argument("config", nargs="?", type=Path, help="a config file to check")
    args = parser.parse_args(argv)
    if args.schema:
        print(json.dumps(json_schema(), indent=2))
        return 0
    if args.config is None:
        parser.error("give a config file to check, or --schema")
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return exc.exit_code
    pools = sum(1 for _ in config.pools())
    print(f"{args.config}: ok ({len(config.queues)} queues, {len(config.clusters)} clusters, {pools} cloud pools)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
