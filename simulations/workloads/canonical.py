"""The canonical workload CSV: `job_id,submit_time_s,gpus,duration_s,queue[,model]` (see data/workloads/README.md).

`submit_time_s` is seconds from the start of the trace (kept as written, not shifted), `duration_s` the run time on
the reference GPU, `gpus` the job's total (one node when <= 8, else whole 8-GPU nodes), `queue` the team. Optional
`gpu_type` and `status` columns are read when present; other extra columns are ignored.
"""

from __future__ import annotations

from pathlib import Path

from spillover.simulations.workloads.common import Collector, Columns, RowError, csv_rows, header_error, number, text, whole

REQUIRED = ("job_id", "submit_time_s", "gpus", "duration_s", "queue")
OPTIONAL = ("model", "gpu_type", "status")
HEADER = ",".join(REQUIRED) + "[,model]"


def load(path: Path, c: Collector) -> None:
    cols: Columns | None = None
    for line, cells in csv_rows(path):
        if cols is None:
            if isinstance(cells, RowError):
                raise header_error(c.source, line, f"{cells.message}; expected {HEADER}")
            cols = Columns.from_header(cells)
            missing, dups = cols.missing(REQUIRED), cols.duplicates()
            if missing or dups:
                what = f"missing column(s) {', '.join(missing)}" if missing else f"repeated column(s) {', '.join(dups)}"
                raise header_error(c.source, line, f"{what}; expected {HEADER}")
            continue
        c.report.rows += 1
        try:
            if isinstance(cells, RowError):
                raise cells
            row = cols.row(cells)
            job_id = text(row["job_id"], "job_id")
            submit = number(row["submit_time_s"], "submit_time_s", ge=0)
            gpus = whole(row["gpus"], "gpus", ge=1)
            duration = number(row["duration_s"], "duration_s", gt=0)
            queue = text(row["queue"], "queue")
            extra = {k: text(row[k], k, required=False) for k in OPTIONAL if k in row}
        except RowError as exc:
            c.bad(line, exc)
            continue
        assert job_id is not None and submit is not None and gpus is not None and duration is not None
        assert queue is not None
        c.add(line, job_id, submit, gpus, duration, queue, **extra)
    if cols is None:
        raise header_error(c.source, 1, f"the file is empty; expected a header {HEADER}")
