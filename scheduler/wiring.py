"""Builds the provider for each configured cluster (the only place that knows which provider class serves which cluster)."""

from __future__ import annotations

from pathlib import Path

from providers.contract import ClusterProvider
from providers.simulated import RuntimeFn, SimNodeGroup, SimPool, SimulatedCluster
from scheduler.clock import Clock
from scheduler.config import CloudCluster, OnPremCluster, SpilloverConfig


def build_providers(config: SpilloverConfig, clock: Clock, *, state_dir: Path | None = None,
                    runtime: RuntimeFn | None = None) -> dict[str, ClusterProvider]:
    """One provider per cluster. Simulated clusters keep their state under `state_dir` when given."""
    if runtime is None:
        def runtime(_job_id, spec, gpu_type):  # noqa: ANN001 - matches RuntimeFn
            return spec.estimated_runtime_s / config.speed(gpu_type)
    out: dict[str, ClusterProvider] = {}
    for c in config.clusters:
        provider = _build_one(config, c, clock, state_dir, runtime)
        if c.prometheus is not None:
            from providers.prometheus import PrometheusSignals
            from providers.signals import WithSignals

            provider = WithSignals(provider, PrometheusSignals(url=c.prometheus.url, queries=c.prometheus.queries,
                                                               timeout_s=c.prometheus.timeout_s))
        out[c.name] = provider
    return out


def _build_one(config: SpilloverConfig, c: OnPremCluster | CloudCluster, clock: Clock, state_dir: Path | None,
               runtime: RuntimeFn) -> ClusterProvider:
    if c.provider == "kubernetes":
        from providers.kubernetes import KubernetesProvider, KubeSettings

        settings = KubeSettings(**c.kubernetes.model_dump())
        return KubernetesProvider(c.name, settings, clock=clock)
    state_path = state_dir / f"{c.name}.json" if state_dir else None
    if isinstance(c, CloudCluster):
        pools = tuple(SimPool(name=p.name, instance_type=p.instance_type, gpu_type=p.gpu_type,
                              gpus_per_node=p.gpus_per_node, cpu_per_node=p.cpu_per_node,
                              memory_gib_per_node=p.memory_gib_per_node, min_nodes=p.min_nodes,
                              max_nodes=p.max_nodes, provisioning_delay_s=p.provisioning_delay_s, spot=p.spot)
                      for p in c.pools)
        return SimulatedCluster(c.name, clock, pools=pools, runtime=runtime, state_path=state_path)
    groups = tuple(SimNodeGroup(count=g.count, gpus_per_node=g.gpus_per_node, gpu_type=g.gpu_type,
                                cpu_per_node=g.cpu_per_node, memory_gib_per_node=g.memory_gib_per_node)
                   for g in c.node_groups)
    return SimulatedCluster(c.name, clock, node_groups=groups, runtime=runtime, state_path=state_path)
