"""The embedded demo: a burst of training jobs replayed through the real loop on the bundled example config."""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from spillover.scheduler.config import SpilloverConfig
from spillover.scheduler.model import JobSpec, JobState
from spillover.scheduler.store import Store
from spillover.simulations.runner import Arrival, Progress, RunResult, run_simulation

MODELS = ["bert", "gpt2", "resnet50", "vit", "llama-ft", "whisper", "t5", "diffusion"]


def demo_workload(config: SpilloverConfig, n_jobs: int = 240, seed: int = 7, span_h: float = 3.0) -> list[Arrival]:
    """A morning rush: jobs from every queue arriving over `span_h` hours, sized like a research cluster's."""
    rng = random.Random(seed)
    queues = [q.name for q in config.queues]
    out = []
    t = 0.0
    for i in range(n_jobs):
        t += rng.expovariate(n_jobs / (span_h * 3600.0))
        r = rng.random()
        gpus, nodes = (1, 1) if r < 0.45 else (2, 1) if r < 0.65 else (4, 1) if r < 0.85 else (8, 1) if r < 0.96 else (8, 2)
        hours = min(12.0, rng.lognormvariate(0.2, 0.8))
        model = rng.choice(MODELS)
        big = gpus * nodes >= 8
        spec = JobSpec(
            name=f"{model}-{i:04d}", queue=rng.choice(queues), image=f"registry.example.com/train/{model}:1.0",
            command=["python", "train.py"], gpus=gpus, nodes=nodes,
            gpu_types=["A100", "A100-80GB", "H100"] if big else [],
            cpu=4.0 * gpus, memory_gib=32.0 * gpus, estimated_runtime_s=round(hours * 3600.0),
            priority=1 if rng.random() < 0.1 else 0, checkpointable=rng.random() < 0.5,
        )
        out.append(Arrival(at_s=round(t, 1), spec=spec))
    return out


@dataclass(frozen=True)
class PlacementRow:
    where: str
    kind: str  # on-prem | cloud
    jobs: int
    gpu_hours: float
    avg_wait_h: float
    example_reason: str


def placement_summary(store: Store, config: SpilloverConfig) -> list[PlacementRow]:
    """Where the jobs ran, with a representative reason for each place."""
    groups: dict[str, list] = defaultdict(list)
    for j in store.jobs([JobState.SUCCEEDED, JobState.FAILED, JobState.RUNNING]):
        where = f"{j.cluster}/{j.pool}" if j.pool else (j.cluster or "?")
        groups[where].append(j)
    rows = []
    for where, jobs in groups.items():
        cluster = config.cluster(where.split("/")[0])
        kind = "on-prem" if cluster.kind == "onprem" or getattr(cluster.kind, "value", "") == "onprem" else "cloud"
        waits = [((j.started_at or j.submitted_at) - j.submitted_at) / 3600.0 for j in jobs]
        gpu_h = sum(j.gpus * ((j.finished_at or j.started_at or 0) - (j.started_at or 0)) / 3600.0 for j in jobs)
        # the reason of the job that waited longest says most about why this place was chosen
        example = max(jobs, key=lambda j: ((j.started_at or 0) - j.submitted_at)).reason
        rows.append(PlacementRow(where, kind, len(jobs), gpu_h, sum(waits) / len(waits), example))
    rows.sort(key=lambda r: (r.kind != "on-prem", -r.jobs))
    return rows


def run_demo(config: SpilloverConfig, db_path: Path, *, n_jobs: int = 240, seed: int = 7,
             progress: Progress | None = None) -> tuple[Store, RunResult]:
    store = Store(f"sqlite:///{db_path}")
    result = run_simulation(config, demo_workload(config, n_jobs, seed), store, progress=progress)
    return store, result
