"""Microsoft Philly's `cluster_job_log` (github.com/msr-fiddle/philly-traces): a JSON array of jobs.

Each job is `{jobid, user, vc, status: Pass|Killed|Failed, submitted_time, attempts: [{start_time, end_time,
detail: [{ip, gpus: [...]}]}]}` with times as "2017-10-07 01:12:09" strings (no zone; differences are what count)
or "None". JSON Lines (one job per line) is read too, and a `.gz` file is decompressed.

- gpus: the GPUs of the job's last attempt, summed over its servers.
- duration: end - start of the last attempt. Earlier attempts are runs that failed and were retried; the last one
  is the run that carried the job to its outcome, so it is the work a replay has to do (summing the attempts would
  count retried work twice).
- submit: `submitted_time`, from the earliest submission among the kept jobs. queue: `vc`.
- filtered, not errors: jobs with no attempts (never ran), a last attempt without GPUs, without a start time
  (a logging gap the dataset documents) or without an end time (still running when the snapshot was taken),
  and zero-length runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from spillover.scheduler.errors import describe_value
from spillover.simulations.workloads.common import Collector, RowError, choice, json_records, read_text, text, timestamp

STATUSES = ("Pass", "Killed", "Failed")


def load(path: Path, c: Collector) -> None:
    for line, record in json_records(read_text(path)):
        if isinstance(record, RowError):
            # a syntax error ends the file: what was read before it is kept, the rest cannot be located
            c.problem(line, record.field, record.message)
            break
        c.report.rows += 1
        try:
            _job(line, record, c)
        except RowError as exc:
            c.bad(line, exc)


def _job(line: int, job: Any, c: Collector) -> None:
    if not isinstance(job, dict):
        raise RowError("job", f"must be a mapping (got {describe_value(job)})")
    job_id = text(job.get("jobid"), "jobid")
    vc = text(job.get("vc"), "vc")
    status = choice(job.get("status"), "status", STATUSES)
    submitted = timestamp(job.get("submitted_time"), "submitted_time")
    attempts = job.get("attempts")
    if attempts is None:
        attempts = []
    if not isinstance(attempts, list):
        raise RowError("attempts", f"must be a list (got {describe_value(attempts)})")
    if not attempts:
        c.filter("never ran (no attempts)")
        return
    k = len(attempts) - 1
    last = attempts[k]
    where = f"attempts[{k}]"
    if not isinstance(last, dict):
        raise RowError(where, f"must be a mapping (got {describe_value(last)})")
    gpus = _gpus(last.get("detail"), f"{where}.detail")
    start = timestamp(last.get("start_time"), f"{where}.start_time", required=False)
    end = timestamp(last.get("end_time"), f"{where}.end_time", required=False)
    if start is not None and end is not None and end < start:
        raise RowError(f"{where}.end_time", f"before start_time ({last.get('end_time')} < {last.get('start_time')})")
    if gpus == 0:
        c.filter("no GPUs in the last attempt")
    elif start is None:
        c.filter("last attempt has no start time")
    elif end is None:
        c.filter("still running at the snapshot (no end time)")
    elif end == start:
        c.filter("ran for 0 s")
    else:
        assert job_id is not None and vc is not None and submitted is not None
        c.add(line, job_id, submitted, gpus, end - start, vc, status=status, id_field="jobid")


def _gpus(detail: Any, where: str) -> int:
    if detail is None:
        return 0
    if not isinstance(detail, list):
        raise RowError(where, f"must be a list (got {describe_value(detail)})")
    total = 0
    for j, server in enumerate(detail):
        if not isinstance(server, dict):
            raise RowError(f"{where}[{j}]", f"must be a mapping (got {describe_value(server)})")
        gpus = server.get("gpus")
        if gpus is None:
            continue
        if not isinstance(gpus, list):
            raise RowError(f"{where}[{j}].gpus", f"must be a list (got {describe_value(gpus)})")
        total += len(gpus)
    return total
