"""Whether a job may run on a target at all (GPU type, allowed targets, node shape, spot), and why not."""

from __future__ import annotations

from spillover.placement.types import JobDemand, Policy, Target


def infeasibility(job: JobDemand, target: Target, policy: Policy) -> str | None:
    """Why `job` can never run on `target`, as a short phrase; None when it may."""
    if job.gpu_types and target.gpu_type not in job.gpu_types:
        return f"{target.gpu_type} is not an allowed GPU type"
    if job.allowed_targets is not None and target.id not in job.allowed_targets:
        return "not an allowed target"
    if job.gpus > target.gpus_per_node:
        return f"nodes have {target.gpus_per_node} GPUs"
    if job.cpu > target.cpu_per_node:
        return f"nodes have {target.cpu_per_node:g} CPUs"
    if job.memory_gib > target.memory_gib_per_node:
        return f"nodes have {target.memory_gib_per_node:g} GiB"
    if target.spot and not job.checkpointable and not policy.spot_for_non_checkpointable:
        return "spot, and the job cannot checkpoint"
    return None


def feasible(job: JobDemand, target: Target, policy: Policy) -> bool:
    return infeasibility(job, target, policy) is None


def describe_demand(job: JobDemand) -> str:
    """The job's shape in a few words, e.g. "2 x 8 H100" or "1 x 4 GPUs, 48 CPUs, 400 GiB"."""
    kind = "/".join(sorted(job.gpu_types)) if job.gpu_types else "GPUs"
    text = f"{job.nodes} x {job.gpus} {kind}"
    if job.cpu > 0:
        text += f", {job.cpu:g} CPUs"
    if job.memory_gib > 0:
        text += f", {job.memory_gib:g} GiB"
    return text
