"""Choosing a workload file's format (from its content, then its name) and loading it with the right reader."""

from __future__ import annotations

import os
from pathlib import Path

from spillover.scheduler.errors import unknown_name_message
from spillover.simulations.workloads import alibaba_gpu, canonical, helios, pai, philly
from spillover.simulations.workloads.common import (
    FORMATS,
    Collector,
    LoadReport,
    RowError,
    TraceJob,
    WorkloadError,
    open_text,
    read_failure,
    split_csv,
)

_PEEK = 1 << 16  # enough for any header; a Philly log can be one line of many megabytes


def _first_line(path: Path) -> str | None:
    try:
        with open_text(path) as f:
            chunk = f.read(_PEEK)
    except (OSError, EOFError, ValueError) as exc:
        raise read_failure(path, exc) from None
    for line in chunk.split("\n"):
        if line.strip():
            return line.rstrip("\r")
    return None


def _check_file(path: Path) -> None:
    if not path.exists():
        raise WorkloadError(f"{path}: no such file")
    if path.is_dir():
        raise WorkloadError(f"{path}: is a directory, not a workload file")


def detect_format(path: str | os.PathLike[str]) -> str:
    """The format of a workload file: from its first line when that says (a JSON document, a known header),
    else from its name (`cluster_job_log`, `cluster_log.csv`, `pai_job_table.csv`, `openb_pod_list_*.csv`)."""
    path = Path(path)
    _check_file(path)
    name = path.name.lower().removesuffix(".gz")
    head = _first_line(path)
    if head is None:
        raise WorkloadError(f"{path}: the file is empty")
    if head.lstrip().startswith(("[", "{")):
        return "philly"
    try:
        cells = [c.lower() for c in split_csv(head)]
    except RowError:
        cells = []
    have = set(cells)
    if set(canonical.REQUIRED) <= have:
        return "canonical"
    if {"gpu_num", "submit_time"} <= have:
        return "helios"
    if {"num_gpu", "creation_time"} <= have:
        return "alibaba-gpu"
    if cells[:2] == ["job_name", "inst_id"]:
        return "pai"
    if cells[:3] == ["job_name", "task_name", "inst_num"] or "pai_task_table" in name:
        raise WorkloadError(f"{path}: this is a PAI task table; load the job table (pai_job_table.csv) and the "
                            "task table next to it is read with it")
    if "cluster_job_log" in name or name.endswith((".json", ".jsonl")):
        return "philly"
    pai_row = len(cells) == len(pai.JOB_COLUMNS) and cells[3] in {s.lower() for s in pai.STATUSES}
    if "pai_job_table" in name or pai_row:  # the published job table has no header row
        return "pai"
    if "openb_pod_list" in name:
        return "alibaba-gpu"
    if "cluster_log" in name:
        return "helios"
    shown = head if len(head) <= 60 else head[:59] + "…"
    raise WorkloadError(f"{path}: cannot tell the workload format from the file's name or first line "
                        f"({shown!r}); give the format, one of: {', '.join(FORMATS)}")


def load_workload(path: str | os.PathLike[str], fmt: str = "auto", *, strict: bool = False,
                  task_table: str | os.PathLike[str] | None = None) -> tuple[list[TraceJob], LoadReport]:
    """The jobs of a workload file, in submission order, and what the load read, skipped and filtered.

    `fmt` is "auto" or one of FORMATS. With `strict` the first bad row raises `WorkloadRowError` (file, line,
    field); without it bad rows are skipped and listed in the report. `task_table` is the PAI task table when it
    is not next to the job table. A missing or unreadable file, an unknown format or a bad header raise
    `WorkloadError` in either mode.
    """
    if fmt != "auto" and fmt not in FORMATS:
        raise WorkloadError(unknown_name_message("workload format", fmt, ["auto", *FORMATS], "formats"))
    path = Path(path)
    _check_file(path)
    if fmt == "auto":
        fmt = detect_format(path)
    if task_table is not None and fmt != "pai":
        raise WorkloadError(f"{path}: a task table goes with the pai format only (this file is {fmt})")
    c = Collector(str(path), fmt, strict=strict)
    if fmt == "canonical":
        canonical.load(path, c)
    elif fmt == "philly":
        philly.load(path, c)
    elif fmt == "helios":
        helios.load(path, c)
    elif fmt == "pai":
        tasks = Path(task_table) if task_table is not None else None
        if tasks is not None:
            _check_file(tasks)
        pai.load(path, c, task_table=tasks)
    else:
        alibaba_gpu.load(path, c)
    # a canonical file's times are already from the trace's start; the others count from an arbitrary origin
    return c.finish(rebase=fmt != "canonical")
