"""Dollar costs of running, delaying, waiting and adding nodes; every solver and the checker use these."""

from __future__ import annotations

from spillover.placement.types import JobDemand, Policy, Target


def run_cost(job: JobDemand, target: Target) -> float:
    """Price of the share of nodes the job uses, for as long as it runs at this target's speed."""
    # A pool without GPUs (CPU-only) is billed by whole nodes.
    share = job.total_gpus / target.gpus_per_node if target.gpus_per_node > 0 else float(job.nodes)
    return target.price_per_node_h * share * job.runtime_h / target.speed


def delay_cost(job: JobDemand, start_h: float) -> float:
    """What starting `start_h` hours from now is worth to the job's owner."""
    return job.value_of_time * job.total_gpus * start_h


def new_node_cost(target: Target, policy: Policy) -> float:
    """A new node bills while it boots and while it idles before scale-down, on top of the jobs' run cost."""
    return target.price_per_node_h * (target.provisioning_h + policy.idle_h)


def wait_cost(job: JobDemand, start_h: float, onprem: Target | None) -> float:
    """Cost of waiting for an on-prem start at `start_h` on `onprem` (None: no on-prem target can run it)."""
    return delay_cost(job, start_h) + (run_cost(job, onprem) if onprem is not None else 0.0)


def cents(dollars: float) -> int:
    """Integer cents, the unit of the CP-SAT objective."""
    return int(round(dollars * 100.0))
