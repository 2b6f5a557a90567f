"""SenseTime Helios `cluster_log.csv` (github.com/S-Lab-System-Group/HeliosData), one file per cluster.

Columns `job_id,user[,vc],gpu_num,cpu_num,node_num,state,submit_time,start_time,end_time,duration,queue` (some
copies name the last one `queue_time`), times as "2020-04-01 00:00:00" strings, `duration` = end - start in
seconds. States are Slurm's final ones (COMPLETED, CANCELLED, FAILED, TIMEOUT, NODE_FAIL, ...).

- gpus: `gpu_num` (the job's total over its `node_num` nodes). duration: `duration`, or end - start when the
  column is empty or absent. submit: `submit_time`, from the earliest kept job. queue: `vc` when the file has it,
  else `user`.
- filtered, not errors: CPU jobs (`gpu_num` 0), jobs that never started (no start time) and zero-length runs.
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
    timestamp,
    whole,
)

STATES = ("COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "SUSPENDED",
          "DEADLINE", "BOOT_FAIL", "REQUEUED")
REQUIRED = ("job_id", "gpu_num", "state", "submit_time")
EXPECTED = "job_id,user[,vc],gpu_num,cpu_num,node_num,state,submit_time,start_time,end_time,duration,queue"


def load(path: Path, c: Collector) -> None:
    cols: Columns | None = None
    for line, cells in csv_rows(path):
        if cols is None:
            if isinstance(cells, RowError):
                raise header_error(c.source, line, f"{cells.message}; expected {EXPECTED}")
            cols = Columns.from_header(cells)
            missing = cols.missing(REQUIRED)
            if "vc" not in cols.index and "user" not in cols.index:
                missing.append("vc or user")
            if "duration" not in cols.index and cols.missing(("start_time", "end_time")):
                missing.append("duration or start_time and end_time")
            if missing or cols.duplicates():
                what = (f"missing column(s) {', '.join(missing)}" if missing
                        else f"repeated column(s) {', '.join(cols.duplicates())}")
                raise header_error(c.source, line, f"{what}; expected {EXPECTED}")
            continue
        c.report.rows += 1
        try:
            if isinstance(cells, RowError):
                raise cells
            _job(line, cols.row(cells), c)
        except RowError as exc:
            c.bad(line, exc)
    if cols is None:
        raise header_error(c.source, 1, f"the file is empty; expected a header {EXPECTED}")


def _job(line: int, row: dict[str, str], c: Collector) -> None:
    job_id = text(row["job_id"], "job_id")
    gpus = whole(row["gpu_num"], "gpu_num", ge=0)
    # Slurm writes "CANCELLED by <uid>"; the state is the first word
    state = choice((row["state"].split() or [""])[0], "state", STATES)
    submit = timestamp(row["submit_time"], "submit_time")
    queue_col = "vc" if "vc" in row else "user"
    queue = text(row[queue_col], queue_col)
    start = timestamp(row["start_time"], "start_time", required=False) if "start_time" in row else None
    end = timestamp(row["end_time"], "end_time", required=False) if "end_time" in row else None
    if start is not None and end is not None and end < start:
        raise RowError("end_time", f"before start_time ({row['end_time']} < {row['start_time']})")
    duration = number(row["duration"], "duration", required=False, ge=0) if "duration" in row else None
    if duration is None and start is not None and end is not None:
        duration = end - start
    assert job_id is not None and gpus is not None and submit is not None and queue is not None
    if gpus == 0:
        c.filter("CPU jobs (gpu_num 0)")
    elif "start_time" in row and start is None:
        c.filter("never started (no start time)")
    elif duration is None:
        c.filter("no duration and no end time")
    elif duration == 0:
        c.filter("ran for 0 s")
    else:
        c.add(line, job_id, submit, gpus, duration, queue, status=state)
