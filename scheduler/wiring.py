"""Builds the provider for each configured cluster (the only place that knows which provider class serves which cluster)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from spillover.providers.contract import ClusterProvider, PoolSpec
from spillover.providers.nodepools import NodePoolAPI
from spillover.providers.simulated import RuntimeFn, SimNodeGroup, SimulatedCluster
from spillover.scheduler.clock import Clock
from spillover.scheduler.config import AksConfig, CloudCluster, EksConfig, GkeConfig, OnPremCluster, SpilloverConfig


def build_providers(config: SpilloverConfig, clock: Clock, *, state_dir: Path | None = None,
                    runtime: RuntimeFn | None = None,
                    node_pool_apis: Mapping[str, NodePoolAPI] | None = None) -> dict[str, ClusterProvider]:
    """One provider per cluster. Simulated clusters keep their state under `state_dir` when given. A cloud
    cluster's node-pool API is built from its config section unless `node_pool_apis` has one by cluster name."""
    if runtime is None:
        def runtime(_job_id, spec, gpu_type):  # noqa: ANN001 - matches RuntimeFn
            return spec.estimated_runtime_s / config.speed(gpu_type)
    out: dict[str, ClusterProvider] = {}
    for c in config.clusters:
        provider = _build_one(config, c, clock, state_dir, runtime, node_pool_apis or {})
        if c.prometheus is not None:
            from spillover.providers.prometheus import PrometheusSignals
            from spillover.providers.signals import WithSignals

            provider = WithSignals(provider, PrometheusSignals(url=c.prometheus.url, queries=c.prometheus.queries,
                                                               timeout_s=c.prometheus.timeout_s))
        out[c.name] = provider
    return out


def _build_one(config: SpilloverConfig, c: OnPremCluster | CloudCluster, clock: Clock, state_dir: Path | None,
               runtime: RuntimeFn, apis: Mapping[str, NodePoolAPI]) -> ClusterProvider:
    if c.provider == "kubernetes":
        from spillover.providers.kubernetes import KubernetesProvider, KubeSettings, PoolInfo

        settings = KubeSettings(**c.kubernetes.model_dump())
        if not isinstance(c, CloudCluster):
            return KubernetesProvider(c.name, settings, clock=clock)
        from spillover.providers.cloud import CloudClusterProvider

        pools = pool_specs(c)
        api = apis.get(c.name) or node_pool_api(c)
        kube = KubernetesProvider(c.name, settings, clock=clock, pools=[
            PoolInfo(name=p.name, instance_type=p.instance_type, gpu_type=p.gpu_type, gpus_per_node=p.gpus_per_node,
                     min_nodes=p.min_nodes, max_nodes=p.max_nodes) for p in pools])
        return CloudClusterProvider(c.name, kube, api, pools, clock)
    state_path = state_dir / f"{c.name}.json" if state_dir else None
    if isinstance(c, CloudCluster):
        return SimulatedCluster(c.name, clock, pools=pool_specs(c), runtime=runtime, state_path=state_path)
    groups = tuple(SimNodeGroup(count=g.count, gpus_per_node=g.gpus_per_node, gpu_type=g.gpu_type,
                                cpu_per_node=g.cpu_per_node, memory_gib_per_node=g.memory_gib_per_node)
                   for g in c.node_groups)
    return SimulatedCluster(c.name, clock, node_groups=groups, runtime=runtime, state_path=state_path)


def pool_specs(c: CloudCluster) -> tuple[PoolSpec, ...]:
    """The cluster's pools with the hardware the catalog filled in at load time."""
    return tuple(PoolSpec(name=p.name, instance_type=p.instance_type, gpu_type=p.gpu_type or "",
                          gpus_per_node=p.gpus_per_node or 0, cpu_per_node=p.cpu_per_node or 0.0,
                          memory_gib_per_node=p.memory_gib_per_node or 0.0, min_nodes=p.min_nodes,
                          max_nodes=p.max_nodes, provisioning_delay_s=p.provisioning_delay_s, spot=p.spot)
                 for p in c.pools)


def node_pool_api(c: CloudCluster) -> NodePoolAPI:
    """The node-pool adapter of a cloud cluster, with the cloud SDK's standard credential chain."""
    section = c.node_pool_api
    if isinstance(section, EksConfig):
        from spillover.providers.eks import EKSNodePools

        return EKSNodePools(c.name, cluster_name=section.cluster_name, region=c.region, profile=section.profile,
                            endpoint_url=section.endpoint_url, timeout_s=section.timeout_s,
                            max_attempts=section.max_attempts)
    if isinstance(section, GkeConfig):
        from spillover.providers.gke import GKENodePools

        return GKENodePools(c.name, project=section.project, location=section.location,
                            cluster_name=section.cluster_name, endpoint=section.endpoint, timeout_s=section.timeout_s)
    if isinstance(section, AksConfig):
        from spillover.providers.aks import AKSNodePools

        return AKSNodePools(c.name, subscription_id=section.subscription_id, resource_group=section.resource_group,
                            cluster_name=section.cluster_name, base_url=section.base_url, timeout_s=section.timeout_s)
    raise ValueError(f"clusters: {c.name}: a {c.cloud.value} cluster with provider: kubernetes needs its "
                     "node-pool API section")
