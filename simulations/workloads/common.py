"""What the workload loaders share: the job record, the load report, typed errors, parsing, line-numbered reading."""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import math
import re
import zlib
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, NamedTuple

from spillover.scheduler.errors import UserError, describe_value
from spillover.scheduler.model import DNS_LABEL

FORMATS: tuple[str, ...] = ("canonical", "philly", "helios", "pai", "alibaba-gpu")

# cells that mean "no value" in the published traces (pandas writes NaN as empty or "nan", Philly writes "None")
MISSING = frozenset({"", "none", "null", "nan", "na", "n/a"})
MAX_QUEUE_NAME = 40
_BAD_CHARS = re.compile(r"[^a-z0-9]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\udc80-\udcff]")  # control characters and undecodable bytes


@dataclass(frozen=True, slots=True)
class TraceJob:
    """One job of a workload, in the simulator's terms. Times are seconds; `duration_s` is the run time on the
    reference GPU; `gpus` is the job's total; `queue` is a lower-case DNS label."""

    job_id: str
    submit_time_s: float  # from the start of the trace, >= 0
    gpus: int
    duration_s: float  # > 0
    queue: str
    model: str | None = None
    gpu_type: str | None = None  # as the trace spells it; None means any
    status: str | None = None  # final status as the trace spells it
    line: int = field(default=0, compare=False)  # where the job starts in its file


class Problem(NamedTuple):
    """A bad row: where it is, which field, what is wrong. `file` is set when the row is not in the loaded file
    itself (the PAI task table)."""

    line: int
    field: str
    message: str
    file: str | None = None

    def __str__(self) -> str:
        where = f"{self.file} line {self.line}" if self.file else f"line {self.line}"
        return f"{where}: {self.field}: {self.message}"


@dataclass
class LoadReport:
    """What a load read, kept, skipped for problems and filtered out by design."""

    source: str
    format: str
    rows: int = 0  # data rows (or JSON records) read from the file
    jobs: int = 0  # jobs kept
    skipped: int = 0  # rows left out because of a problem
    problems: list[Problem] = field(default_factory=list)
    filtered: Counter[str] = field(default_factory=Counter)  # reason -> rows left out by design

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def filtered_total(self) -> int:
        return sum(self.filtered.values())

    def summary(self, max_shown: int = 5) -> str:
        """One line for the CLI: "philly.json: 12,345 jobs from 12,402 rows; 17 rows skipped: line 88: gpus: ...;
        ... (first 5 of 17 shown); 40 filtered: 30 never ran, 10 no GPUs"."""
        parts = [f"{self.source}: {self.jobs:,} jobs from {self.rows:,} rows ({self.format})"]
        if self.problems or self.skipped:
            noun = "row" if self.skipped == 1 else "rows"
            head = f"{self.skipped:,} {noun} skipped"
            if len(self.problems) != self.skipped:
                head += f", {len(self.problems):,} problem{'' if len(self.problems) == 1 else 's'}"
            shown = "; ".join(str(p) for p in self.problems[:max_shown])
            more = f" (first {max_shown} shown)" if len(self.problems) > max_shown else ""
            parts.append(f"{head}: {shown}{more}" if shown else head)
        if self.filtered:
            reasons = ", ".join(f"{n:,} {reason}" for reason, n in self.filtered.most_common())
            parts.append(f"{self.filtered_total:,} filtered: {reasons}")
        return "; ".join(parts)


class WorkloadError(UserError):
    """A workload file is missing, unreadable, of an unknown format, or asked for with bad options."""


class WorkloadRowError(WorkloadError):
    """A row (or the header) of a workload file is invalid; names the file, the line and the field."""

    def __init__(self, source: str, problem: Problem) -> None:
        self.source = problem.file or source
        self.problem = problem
        self.line = problem.line
        self.field = problem.field
        super().__init__(f"{self.source}: line {problem.line}: {problem.field}: {problem.message}")


class RowError(Exception):
    """Raised by the field parsers inside one row; the loader turns it into a Problem at the row's line."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


# ---- field parsing ----


def _got(value: Any) -> str:
    return f" (got {describe_value(value)})"


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() in MISSING) or (
        isinstance(value, float) and math.isnan(value))


def text(value: Any, name: str, *, required: bool = True, missing: Collection[str] = ("",)) -> str | None:
    """A non-empty piece of text without control characters; numbers from JSON are taken as their spelling."""
    if isinstance(value, bool) or (value is not None and not isinstance(value, str | int)):
        raise RowError(name, f"must be a string{_got(value)}")
    s = "" if value is None else str(value).strip()
    if s.lower() in missing or s == "":
        if required:
            raise RowError(name, "required")
        return None
    if _CONTROL.search(s):
        raise RowError(name, f"must be printable UTF-8 text{_got(s)}")
    return s


def number(value: Any, name: str, *, required: bool = True, ge: float | None = None,
           gt: float | None = None) -> float | None:
    if _is_missing(value):
        if required:
            raise RowError(name, "required")
        return None
    if isinstance(value, bool):
        raise RowError(name, f"must be a number{_got(value)}")
    try:
        x = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError, OverflowError):
        raise RowError(name, f"must be a number{_got(value)}") from None
    if not math.isfinite(x):
        raise RowError(name, f"must be a finite number{_got(value)}")
    if ge is not None and x < ge:
        raise RowError(name, f"must be at least {describe_value(ge)}{_got(value)}")
    if gt is not None and x <= gt:
        raise RowError(name, f"must be greater than {describe_value(gt)}{_got(value)}")
    return x


def whole(value: Any, name: str, *, required: bool = True, ge: int | None = None) -> int | None:
    """A whole number; "4.0" (as pandas writes integer columns with gaps) counts as 4."""
    expected = "must be a whole number" + (f" >= {ge}" if ge is not None else "")
    try:
        x = number(value, name, required=required)
    except RowError as exc:
        if exc.message == "required":
            raise
        raise RowError(name, f"{expected}{_got(value)}") from None
    if x is None:
        return None
    if not x.is_integer() or (ge is not None and x < ge):
        raise RowError(name, f"{expected}{_got(value)}")
    return int(x)


def timestamp(value: Any, name: str, *, required: bool = True) -> float | None:
    """Seconds since the epoch of a "2017-10-03 12:34:56" time (ISO 8601; without a zone it is read as UTC, so
    differences between times of one trace are exact)."""
    if _is_missing(value):
        if required:
            raise RowError(name, "required")
        return None
    if not isinstance(value, str):
        raise RowError(name, f"must be a time like '2017-10-03 12:34:56'{_got(value)}")
    try:
        t = datetime.fromisoformat(value.strip())
    except ValueError:
        raise RowError(name, f"must be a time like '2017-10-03 12:34:56'{_got(value)}") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return t.timestamp()


def choice(value: Any, name: str, allowed: Sequence[str]) -> str:
    """One of `allowed`, matched without regard to case and returned in the trace's own spelling."""
    s = text(value, name)
    assert s is not None
    for a in allowed:
        if s.lower() == a.lower():
            return a
    listed = ", ".join(f"'{a}'" for a in allowed)
    raise RowError(name, f"must be one of {listed}{_got(value)}")


# ---- names ----


def short_hash(s: str, n: int = 6) -> str:
    return hashlib.sha1(s.encode("utf-8", "surrogatepass")).hexdigest()[:n]


def dns_label(raw: str, max_len: int, *, empty: str = "x") -> str:
    """`raw` as a lower-case DNS label of at most `max_len` characters; a shortened or emptied name keeps a hash
    of the original so different names stay apart."""
    label = _BAD_CHARS.sub("-", raw.lower()).strip("-")
    if not label:
        return f"{empty}-{short_hash(raw)}"
    if len(label) > max_len:
        label = label[: max_len - 7].rstrip("-") + "-" + short_hash(raw)
    return label


def queue_names(raws: Iterable[str]) -> dict[str, str]:
    """Trace queue name -> queue label. A name that is already a valid label keeps it; names that would fold onto
    the same label (case, punctuation) get a hash suffix, so the mapping never merges two teams. The result
    depends only on the set of names, not their order."""
    by_label: dict[str, list[str]] = defaultdict(list)
    for raw in set(raws):
        by_label[dns_label(raw, MAX_QUEUE_NAME, empty="q")].append(raw)
    out: dict[str, str] = {}
    for label, members in by_label.items():
        for raw in members:
            if len(members) == 1 or raw == label:
                out[raw] = label
            else:
                out[raw] = label[: MAX_QUEUE_NAME - 7].rstrip("-") + "-" + short_hash(raw)
    assert all(DNS_LABEL.match(v) for v in out.values())
    return out


# ---- collecting rows into jobs ----


@dataclass(slots=True)
class _Pending:
    line: int
    job_id: str
    submit_s: float
    gpus: int
    duration_s: float
    queue: str
    model: str | None
    gpu_type: str | None
    status: str | None


class Collector:
    """Accumulates a file's jobs and its report. In strict mode the first problem raises `WorkloadRowError`."""

    def __init__(self, source: str, fmt: str, *, strict: bool) -> None:
        self.source = source
        self.strict = strict
        self.report = LoadReport(source=source, format=fmt)
        self._jobs: list[_Pending] = []
        self._ids: dict[str, int] = {}

    def problem(self, line: int, name: str, message: str, *, file: str | None = None) -> None:
        p = Problem(line, name, message, file)
        if self.strict:
            raise WorkloadRowError(self.source, p)
        self.report.problems.append(p)

    def bad(self, line: int, err: RowError, *, file: str | None = None) -> None:
        """A row left out for a problem."""
        self.problem(line, err.field, err.message, file=file)
        self.report.skipped += 1

    def filter(self, reason: str) -> None:
        """A row left out by design (a CPU job, a job that never ran)."""
        self.report.filtered[reason] += 1

    def add(self, line: int, job_id: str, submit_s: float, gpus: int, duration_s: float, queue: str, *,
            model: str | None = None, gpu_type: str | None = None, status: str | None = None,
            id_field: str = "job_id") -> None:
        first = self._ids.get(job_id)
        if first is not None:
            self.bad(line, RowError(id_field, f"duplicate of line {first} ({describe_value(job_id)})"))
            return
        self._ids[job_id] = line
        self._jobs.append(_Pending(line, job_id, submit_s, gpus, duration_s, queue, model, gpu_type, status))

    def finish(self, *, rebase: bool) -> tuple[list[TraceJob], LoadReport]:
        """The jobs in submission order (stable), submit times from the earliest kept job when `rebase`."""
        t0 = min((p.submit_s for p in self._jobs), default=0.0) if rebase else 0.0
        names = queue_names(p.queue for p in self._jobs)
        jobs = [TraceJob(job_id=p.job_id, submit_time_s=p.submit_s - t0, gpus=p.gpus, duration_s=p.duration_s,
                         queue=names[p.queue], model=p.model, gpu_type=p.gpu_type, status=p.status, line=p.line)
                for p in self._jobs]
        jobs.sort(key=lambda j: j.submit_time_s)
        self.report.jobs = len(jobs)
        return jobs, self.report


# ---- reading files ----


def open_text(path: Path) -> IO[str]:
    # splitting only on "\n" keeps line numbers the same as an editor's and `wc -l`; undecodable bytes survive as
    # surrogates, so one bad row is reported at its line instead of failing the file
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig", errors="surrogateescape", newline="\n")
    return open(path, encoding="utf-8-sig", errors="surrogateescape", newline="\n")


def read_failure(path: Path, exc: BaseException) -> WorkloadError:
    if isinstance(exc, FileNotFoundError):
        return WorkloadError(f"{path}: no such file")
    if isinstance(exc, IsADirectoryError):
        return WorkloadError(f"{path}: is a directory, not a workload file")
    if isinstance(exc, PermissionError):
        return WorkloadError(f"{path}: cannot read: permission denied")
    if isinstance(exc, gzip.BadGzipFile | EOFError | zlib.error):
        return WorkloadError(f"{path}: not a complete gzip file ({exc or type(exc).__name__})")
    return WorkloadError(f"{path}: cannot read: {exc}")


def read_text(path: Path) -> str:
    try:
        with open_text(path) as f:
            return f.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise read_failure(path, exc) from None


def lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line without its end) for every line of the file, streamed."""
    try:
        with open_text(path) as f:
            for n, line in enumerate(f, 1):
                yield n, line.rstrip("\n").rstrip("\r")
    except (OSError, EOFError, zlib.error) as exc:
        raise read_failure(path, exc) from None


def split_csv(line: str) -> list[str]:
    """The cells of one CSV line, stripped. Quoted cells are read as CSV; a line that is not valid CSV raises."""
    if '"' not in line:
        return [c.strip() for c in line.split(",")]
    try:
        rows = list(csv.reader([line], strict=True))
    except csv.Error as exc:
        raise RowError("row", f"not valid CSV ({exc})") from None
    return [c.strip() for c in rows[0]] if rows else []


def csv_rows(path: Path) -> Iterator[tuple[int, list[str] | RowError]]:
    """(line number, cells) for every non-blank line; a line that cannot be split yields its RowError instead."""
    for n, line in lines(path):
        if not line.strip():
            continue
        try:
            yield n, split_csv(line)
        except RowError as exc:
            yield n, exc


class Columns:
    """Where each named column is in a row: from a header row, or the documented order for header-less files."""

    def __init__(self, names: Sequence[str], index: Mapping[str, int], width: int) -> None:
        self.names = list(names)
        self.index = dict(index)
        self.width = width

    @classmethod
    def from_header(cls, cells: Sequence[str]) -> Columns:
        names = [c.strip().lower() for c in cells]
        return cls(names, {n: i for i, n in reversed(list(enumerate(names)))}, len(names))

    @classmethod
    def positional(cls, names: Sequence[str]) -> Columns:
        return cls(names, {n: i for i, n in enumerate(names)}, len(names))

    def duplicates(self) -> list[str]:
        return sorted(n for n, k in Counter(self.names).items() if k > 1 and n)

    def missing(self, required: Iterable[str]) -> list[str]:
        return [r for r in required if r not in self.index]

    def row(self, cells: Sequence[str]) -> dict[str, str]:
        if len(cells) != self.width:
            raise RowError("row", f"has {len(cells)} fields; expected {self.width} ({','.join(self.names)})")
        return {n: cells[i] for n, i in self.index.items()}


def header_error(source: str, line: int, message: str) -> WorkloadRowError:
    return WorkloadRowError(source, Problem(line, "header", message))


# ---- JSON records with their line numbers ----


def _skip_ws(s: str, i: int) -> int:
    n = len(s)
    while i < n and s[i] in " \t\r\n":
        i += 1
    return i


def json_records(content: str) -> Iterator[tuple[int, Any]]:
    """(line, value) for each element of a top-level JSON array, or each value of a JSON Lines file. A syntax
    error yields (line, RowError) and ends the iteration, since nothing after it can be trusted."""
    decoder = json.JSONDecoder()
    line, pos = 1, 0

    def line_at(i: int) -> int:
        nonlocal line, pos
        if i >= pos:
            line += content.count("\n", pos, i)
        else:
            line = content.count("\n", 0, i) + 1
        pos = i
        return line

    i = _skip_ws(content, 0)
    if i >= len(content):
        return
    array = content[i] == "["
    if array:
        i = _skip_ws(content, i + 1)
        if i < len(content) and content[i] == "]":
            j = _skip_ws(content, i + 1)
            if j < len(content):
                yield line_at(j), RowError("json", "text after the closing ']'")
            return
    while True:
        if i >= len(content):
            if array:
                yield line_at(i), RowError("json", "the file ends inside the top-level array (missing ']')")
            return
        try:
            value, end = decoder.raw_decode(content, i)
        except json.JSONDecodeError as exc:
            yield line_at(exc.pos), RowError("json", f"not valid JSON: {exc.msg}")
            return
        except RecursionError:
            yield line_at(i), RowError("json", "nested too deeply")
            return
        yield line_at(i), value
        i = _skip_ws(content, end)
        if not array:
            continue
        if i < len(content) and content[i] == ",":
            i = _skip_ws(content, i + 1)
            continue
        if i < len(content) and content[i] == "]":
            j = _skip_ws(content, i + 1)
            if j < len(content):
                yield line_at(j), RowError("json", "text after the closing ']'")
            return
        yield line_at(i), RowError("json", "expected ',' or ']' after a record")
        return
