"""Alibaba PAI 2020 GPU trace (github.com/alibaba/clusterdata, cluster-trace-gpu-v2020): job and task tables.

The job table `pai_job_table.csv` is joined with the `pai_task_table.csv` next to it.

Job table: `job_name,inst_id,user,status,start_time,end_time` (status Running|Terminated|Failed|Waiting; times
are seconds, shifted by a constant, with `start_time` the submission). Task table: `job_name,task_name,inst_num,
status,start_time,end_time,plan_cpu,plan_mem,plan_gpu,gpu_type` with `plan_gpu` in percent of one GPU (50 is half
a GPU) per instance. The published files have no header row (the names are in `*.header` files); both forms are
read.

- gpus: the job's planned GPUs, sum over its tasks of inst_num * plan_gpu / 100, rounded up once for the job
  (two half-GPU instances share one GPU).
- duration: the longest end - start among the job's tasks. submit: the job's start_time, from the earliest kept
  job. queue: `user` (a hash) as a DNS label. gpu_type: the tasks' `gpu_type` when all GPU tasks agree on one;
  MISC (older GPUs of several kinds) or a mix mean any.
- filtered, not errors: jobs without tasks, CPU-only jobs (no GPU planned), jobs without a task that has both a
  start and an end time (still running or waiting), zero-length runs.
- a bad task row is reported at its line in the task table and its job is skipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from spillover.simulations.workloads.common import (
    Collector,
    Columns,
    RowError,
    WorkloadError,
    choice,
    csv_rows,
    header_error,
    number,
    text,
)

JOB_COLUMNS = ("job_name", "inst_id", "user", "status", "start_time", "end_time")
TASK_COLUMNS = ("job_name", "task_name", "inst_num", "status", "start_time", "end_time", "plan_cpu", "plan_mem",
                "plan_gpu", "gpu_type")
STATUSES = ("Terminated", "Failed", "Running", "Waiting")
ANY_GPU = frozenset({"misc"})


@dataclass(slots=True)
class _Job:
    line: int
    user: str
    status: str
    submit_s: float
    gpu_percent: float = 0.0
    duration_s: float | None = None
    tasks: int = 0
    gpu_types: set[str] = field(default_factory=set)
    bad: bool = False


def task_table_for(job_table: Path) -> Path:
    """Where the task table of a job table is: its name with "task_table" for "job_table", in the same directory."""
    name = job_table.name
    swapped = name.replace("job_table", "task_table") if "job_table" in name else "pai_task_table.csv"
    return job_table.with_name(swapped)


def load(path: Path, c: Collector, *, task_table: Path | None = None) -> None:
    tasks_path = task_table or task_table_for(path)
    if not tasks_path.exists():
        raise WorkloadError(f"{path}: the PAI task table {tasks_path} is missing; it holds the jobs' GPUs and run "
                            "times (give its path with task_table=)")
    jobs = _jobs(path, c)
    _tasks(tasks_path, jobs, c)
    for name, job in jobs.items():
        if job.bad:
            c.report.skipped += 1
            continue
        gpus = math.ceil(job.gpu_percent / 100.0 - 1e-9)
        if job.tasks == 0:
            c.filter("no tasks in the task table")
        elif gpus <= 0:
            c.filter("CPU-only (no GPU planned)")
        elif job.duration_s is None:
            c.filter("no task with a start and an end time")
        elif job.duration_s == 0:
            c.filter("ran for 0 s")
        else:
            types = {t for t in job.gpu_types if t.lower() not in ANY_GPU}
            gpu_type = next(iter(types)) if len(types) == 1 and len(job.gpu_types) == 1 else None
            c.add(job.line, name, job.submit_s, gpus, job.duration_s, job.user, gpu_type=gpu_type,
                  status=job.status, id_field="job_name")


def _columns(first: list[str], names: tuple[str, ...]) -> tuple[Columns, bool]:
    """The columns and whether `first` is a header row."""
    if first and first[0].strip().lower() == names[0]:
        cols = Columns.from_header(first)
        if not cols.missing(names[:1]):
            return cols, True
    return Columns.positional(names), False


def _jobs(path: Path, c: Collector) -> dict[str, _Job]:
    jobs: dict[str, _Job] = {}
    cols: Columns | None = None
    for line, cells in csv_rows(path):
        if cols is None:
            cols, is_header = _columns(cells if isinstance(cells, list) else [], JOB_COLUMNS)
            if is_header:
                if missing := cols.missing(("job_name", "user", "status", "start_time")):
                    raise header_error(c.source, line, f"missing column(s) {', '.join(missing)}; expected "
                                                       f"{','.join(JOB_COLUMNS)}")
                continue
        c.report.rows += 1
        try:
            if isinstance(cells, RowError):
                raise cells
            row = cols.row(cells)
            name = text(row["job_name"], "job_name")
            user = text(row["user"], "user")
            status = choice(row["status"], "status", STATUSES)
            start = number(row["start_time"], "start_time", ge=0)
            end = number(row.get("end_time"), "end_time", required=False, ge=0)
            if start is not None and end is not None and end < start:
                raise RowError("end_time", f"before start_time ({row['end_time']} < {row['start_time']})")
            assert name is not None and user is not None and start is not None
            if name in jobs:
                raise RowError("job_name", f"duplicate of line {jobs[name].line} ('{name}')")
        except RowError as exc:
            c.bad(line, exc)
            continue
        jobs[name] = _Job(line=line, user=user, status=status, submit_s=start)
    return jobs


def _tasks(path: Path, jobs: dict[str, _Job], c: Collector) -> None:
    cols: Columns | None = None
    where = path.name
    for line, cells in csv_rows(path):
        if cols is None:
            cols, is_header = _columns(cells if isinstance(cells, list) else [], TASK_COLUMNS)
            if is_header:
                continue
        if isinstance(cells, RowError):
            c.problem(line, cells.field, cells.message, file=where)
            continue
        k = cols.index["job_name"]
        job = jobs.get(cells[k].strip()) if k < len(cells) else None
        if job is None:
            # a task of a job the job table does not list (or left out for a problem); a row too broken to
            # tell whose it is is still worth a report
            if len(cells) != cols.width:
                c.problem(line, "row", f"has {len(cells)} fields; expected {cols.width} ({','.join(cols.names)})",
                          file=where)
            continue
        try:
            row = cols.row(cells)
            inst = number(row.get("inst_num"), "inst_num", ge=0)
            plan_gpu = number(row.get("plan_gpu"), "plan_gpu", required=False, ge=0) or 0.0
            start = number(row.get("start_time"), "start_time", required=False, ge=0)
            end = number(row.get("end_time"), "end_time", required=False, ge=0)
            if start is not None and end is not None and end < start:
                raise RowError("end_time", f"before start_time ({row['end_time']} < {row['start_time']})")
            gpu_type = text(row.get("gpu_type"), "gpu_type", required=False, missing=("", "nan", "none"))
        except RowError as exc:
            c.problem(line, exc.field, exc.message, file=where)
            job.bad = True
            continue
        assert inst is not None
        job.tasks += 1
        job.gpu_percent += inst * plan_gpu
        if plan_gpu > 0 and gpu_type:
            job.gpu_types.add(gpu_type)
        if start is not None and end is not None:
            job.duration_s = max(job.duration_s or 0.0, end - start)
