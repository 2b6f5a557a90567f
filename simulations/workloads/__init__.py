"""Workload loaders for the simulator: the canonical CSV and public GPU-cluster traces, read and replayed.

`load_workload` reads a file into `TraceJob`s with a `LoadReport` of bad and filtered rows; `to_arrivals` turns
the jobs into simulator arrivals and the true run times that drive the simulated clusters.
"""

from spillover.simulations.workloads.common import (
    FORMATS,
    LoadReport,
    Problem,
    TraceJob,
    WorkloadError,
    WorkloadRowError,
)
from spillover.simulations.workloads.loader import detect_format, load_workload
from spillover.simulations.workloads.replay import DEFAULT_IMAGE, MAX_RUNTIME_S, Replay, job_names, to_arrivals

__all__ = [
    "DEFAULT_IMAGE",
    "FORMATS",
    "MAX_RUNTIME_S",
    "LoadReport",
    "Problem",
    "Replay",
    "TraceJob",
    "WorkloadError",
    "WorkloadRowError",
    "detect_format",
    "job_names",
    "load_workload",
    "to_arrivals",
]
