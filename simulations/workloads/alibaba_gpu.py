"""Alibaba GPU 2023 pod lists, `openb_pod_list_*.csv` (github.com/alibaba/clusterdata, cluster-trace-gpu-v2023).

Columns `name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,
scheduled_time`; times are whole seconds from a shifted origin; `gpu_milli` is the share of one GPU (1000 = all
of it) a GPU-sharing pod (`num_gpu` 1) asks for; `gpu_spec` lists the GPU types a pod accepts ("V100M16|V100M32";
empty or "nan" means any); `qos` is LS, BE, Burstable or Guaranteed.

- gpus: `num_gpu`; a fractional GPU (`gpu_milli` < 1000) counts as a whole one, since a replay places whole GPUs.
- duration: deletion_time - scheduled_time. submit: creation_time, from the earliest kept pod. queue: `qos`.
  gpu_type: `gpu_spec` as written.
- filtered, not errors: CPU pods (`num_gpu` 0), pods never scheduled (no scheduled_time), pods without a deletion
  time, zero-length runs.
"""

from __future__ import annotations

from pathlib import Path

from spillover.simulations.workloads.common import (
    Collector,
    Columns,
    RowError,
    choice,
    csv_rows,
    header_error,
    number,
    text,
    whole,
)

COLUMNS = ("name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli", "gpu_spec", "qos", "pod_phase",
           "creation_time", "deletion_time", "scheduled_time")
REQUIRED = ("name", "num_gpu", "qos", "pod_phase", "creation_time", "deletion_time", "scheduled_time")
PHASES = ("Pending", "Running", "Succeeded", "Failed", "Unknown")


def load(path: Path, c: Collector) -> None:
    cols: Columns | None = None
    for line, cells in csv_rows(path):
        if cols is None:
            first = cells if isinstance(cells, list) else []
            if first and first[0].strip().lower() == "name":
                cols = Columns.from_header(first)
                if missing := cols.missing(REQUIRED):
                    raise header_error(c.source, line, f"missing column(s) {', '.join(missing)}; expected "
                                                       f"{','.join(COLUMNS)}")
                continue
            cols = Columns.positional(COLUMNS)  # a copy saved without its header row
        c.report.rows += 1
        try:
            if isinstance(cells, RowError):
                raise cells
            _pod(line, cols.row(cells), c)
        except RowError as exc:
            c.bad(line, exc)


def _pod(line: int, row: dict[str, str], c: Collector) -> None:
    name = text(row["name"], "name")
    gpus = whole(row["num_gpu"], "num_gpu", ge=0)
    if "gpu_milli" in row:
        number(row["gpu_milli"], "gpu_milli", required=False, ge=0)
    qos = text(row["qos"], "qos")
    phase = choice(row["pod_phase"], "pod_phase", PHASES)
    created = number(row["creation_time"], "creation_time", ge=0)
    scheduled = number(row["scheduled_time"], "scheduled_time", required=False, ge=0)
    deleted = number(row["deletion_time"], "deletion_time", required=False, ge=0)
    assert name is not None and gpus is not None and qos is not None and created is not None
    if scheduled is not None and scheduled < created:
        raise RowError("scheduled_time", f"before creation_time ({row['scheduled_time']} < {row['creation_time']})")
    if scheduled is not None and deleted is not None and deleted < scheduled:
        raise RowError("deletion_time", f"before scheduled_time ({row['deletion_time']} < {row['scheduled_time']})")
    gpu_spec = text(row.get("gpu_spec"), "gpu_spec", required=False, missing=("", "nan", "none"))
    if gpus == 0:
        c.filter("CPU pods (num_gpu 0)")
    elif scheduled is None:
        c.filter("never scheduled")
    elif deleted is None:
        c.filter("no deletion time")
    elif deleted == scheduled:
        c.filter("ran for 0 s")
    else:
        c.add(line, name, created, gpus, deleted - scheduled, qos, gpu_type=gpu_spec, status=phase, id_field="name")
