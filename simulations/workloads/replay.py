"""Turning trace jobs into simulator arrivals, with the true run times that drive the simulated clusters.

Big jobs become gangs of whole nodes, job ids become unique DNS-label names, and estimates may carry a seeded error
while the true run times stay as the trace says.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from spillover.providers.simulated import RuntimeFn
from spillover.scheduler.model import MAX_JOB_NAME, JobSpec
from spillover.simulations.runner import Arrival
from spillover.simulations.workloads.common import TraceJob, WorkloadError, dns_label, short_hash

DEFAULT_IMAGE = "registry.example.com/replay/train:1.0"
MAX_RUNTIME_S = float(next(m.le for m in JobSpec.model_fields["estimated_runtime_s"].metadata
                           if getattr(m, "le", None) is not None))
MAX_NODES = 1024  # JobSpec.nodes
MAX_GPUS_PER_REPLICA = 64  # JobSpec.gpus


@dataclass(frozen=True)
class Replay:
    """Arrivals for `run_simulation`, and what the simulated clusters need to run them for their true time."""

    arrivals: list[Arrival]
    true_runtime_s: dict[str, float]  # arrival job id -> run time on the reference GPU
    trace_ids: dict[str, str]  # arrival job id -> the trace's job id
    clamped: int = 0  # jobs whose run time was cut to the JobSpec limit
    too_large: list[str] = field(default_factory=list)  # trace job ids left out: more nodes than a gang may have

    def runtime(self, speed: Callable[[str], float] | None = None) -> RuntimeFn:
        """A RuntimeFn (for `build_providers(..., runtime=)`) running each job for its true time, divided by
        `speed(gpu_type)` when given (e.g. `config.speed`)."""
        true = self.true_runtime_s

        def run_for(job_id: str, spec: JobSpec, gpu_type: str) -> float:
            base = true.get(job_id, spec.estimated_runtime_s)
            return base / speed(gpu_type) if speed is not None else base

        return run_for

    def summary(self) -> str:
        parts = [f"{len(self.arrivals):,} arrivals"]
        if self.clamped:
            parts.append(f"{self.clamped:,} run times cut to {MAX_RUNTIME_S / 86400:.0f} days")
        if self.too_large:
            parts.append(f"{len(self.too_large):,} jobs left out for needing more than {MAX_NODES} nodes "
                         f"(first: {', '.join(self.too_large[:3])})")
        return "; ".join(parts)


def job_names(ids: Iterable[str]) -> list[str]:
    """A unique DNS label of at most MAX_JOB_NAME characters for each job id, in order; a name that is taken
    already gets a hash of its id and position."""
    out: list[str] = []
    used: set[str] = set()
    for k, job_id in enumerate(ids):
        name = dns_label(job_id, MAX_JOB_NAME, empty="job")
        if name in used:
            name = name[: MAX_JOB_NAME - 9].rstrip("-") + "-" + short_hash(f"{k}:{job_id}", 8)
        while name in used:  # only a hash collision gets here
            name = name[: MAX_JOB_NAME - 9].rstrip("-") + "-" + short_hash(name, 8)
        used.add(name)
        out.append(name)
    return out


def to_arrivals(jobs: Iterable[TraceJob], *, image: str = DEFAULT_IMAGE, runtime_scale: float = 1.0,
                max_gpus_per_node: int = 8, estimate_error: float | None = None, seed: int = 0,
                gpu_type_map: Mapping[str, str] | None = None, queue_map: Mapping[str, str] | None = None,
                cpu_per_gpu: float | None = None, memory_gib_per_gpu: float | None = None,
                checkpointable: bool = False) -> Replay:
    """Simulator arrivals for `jobs`.

    A job of at most `max_gpus_per_node` GPUs is one replica with all of them; a bigger one is a gang of
    ceil(gpus / max_gpus_per_node) whole nodes of `max_gpus_per_node` GPUs. Run times are `duration_s *
    runtime_scale`, cut to the JobSpec limit of 366 days (counted in `clamped`). The spec's estimate is the run
    time, or with `estimate_error=e` the run time times a factor drawn uniformly from [1 - e, 1 + e] (seeded by
    `seed`), while `true_runtime_s` keeps the run time itself. Trace GPU types are dropped (any GPU) unless
    `gpu_type_map` maps them to configured ones ("|"-separated alternatives are mapped one by one); `queue_map`
    renames trace queues to configured ones. CPU and memory per replica are JobSpec's defaults unless given per GPU.
    """
    if not image.strip():
        raise WorkloadError("image: must not be empty")
    if not (math.isfinite(runtime_scale) and runtime_scale > 0):
        raise WorkloadError(f"runtime scale: must be a positive number (got {runtime_scale})")
    if not 1 <= max_gpus_per_node <= MAX_GPUS_PER_REPLICA:
        raise WorkloadError(f"GPUs per node: must be between 1 and {MAX_GPUS_PER_REPLICA} (got {max_gpus_per_node})")
    if estimate_error is not None and not 0 <= estimate_error < 1:
        raise WorkloadError(f"estimate error: must be at least 0 and less than 1 (got {estimate_error})")
    for what, per_gpu in (("CPU per GPU", cpu_per_gpu), ("memory per GPU", memory_gib_per_gpu)):
        if per_gpu is not None and not (math.isfinite(per_gpu) and per_gpu > 0):
            raise WorkloadError(f"{what}: must be a positive number (got {per_gpu})")
    rng = random.Random(seed)
    jobs = list(jobs)
    names = job_names(j.job_id for j in jobs)
    arrivals: list[Arrival] = []
    true: dict[str, float] = {}
    trace_ids: dict[str, str] = {}
    clamped = 0
    too_large: list[str] = []
    for job, name in zip(jobs, names, strict=True):
        if job.gpus <= max_gpus_per_node:
            per_node, nodes = job.gpus, 1
        else:
            per_node, nodes = max_gpus_per_node, math.ceil(job.gpus / max_gpus_per_node)
        if nodes > MAX_NODES:
            too_large.append(job.job_id)
            continue
        run_s = job.duration_s * runtime_scale
        if run_s > MAX_RUNTIME_S:
            run_s = MAX_RUNTIME_S
            clamped += 1
        factor = rng.uniform(1 - estimate_error, 1 + estimate_error) if estimate_error else 1.0
        estimate = min(max(run_s * factor, 1e-3), MAX_RUNTIME_S)
        extra: dict[str, float] = {}
        if cpu_per_gpu is not None:
            extra["cpu"] = min(cpu_per_gpu * per_node, 1024.0)
        if memory_gib_per_gpu is not None:
            extra["memory_gib"] = min(memory_gib_per_gpu * per_node, 65536.0)
        spec = JobSpec(name=name, queue=(queue_map or {}).get(job.queue, job.queue), image=image,
                       gpus=per_node, nodes=nodes, gpu_types=_gpu_types(job.gpu_type, gpu_type_map),
                       estimated_runtime_s=estimate, checkpointable=checkpointable, **extra)
        arrivals.append(Arrival(at_s=job.submit_time_s, spec=spec, job_id=name))
        true[name] = run_s
        trace_ids[name] = job.job_id
    return Replay(arrivals=arrivals, true_runtime_s=true, trace_ids=trace_ids, clamped=clamped, too_large=too_large)


def _gpu_types(gpu_type: str | None, mapping: Mapping[str, str] | None) -> list[str]:
    if not gpu_type or not mapping:
        return []
    wanted = [mapping[t] for t in (s.strip() for s in gpu_type.split("|")) if t in mapping]
    if len(wanted) < len([t for t in gpu_type.split("|") if t.strip()]):
        return []  # an unmapped alternative is a type the config lacks: the job could run on it, so any fits best
    return sorted(set(wanted))
