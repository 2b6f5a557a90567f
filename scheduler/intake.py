"""Jobs coming in and going out, shared by the CLI and the API: bounded reading of job files, parsing of one or
many documents, the checks against the config, submitting and cancelling."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from spillover.scheduler.config import ApiConfig, CloudCluster, SpilloverConfig
from spillover.scheduler.errors import ConflictError, JobSpecError, UnknownQueueError
from spillover.scheduler.jobspec import parse_job_document, parse_job_specs, read_yaml_documents
from spillover.scheduler.model import JobSpec, JobState
from spillover.scheduler.records import Job
from spillover.scheduler.store import Store

DEFAULT_MAX_BYTES = ApiConfig.model_fields["max_body_bytes"].default
STDIN = "-"


# ---- reading ----------------------------------------------------------------------------------------


def read_bounded(stream: BinaryIO, limit: int, source: str) -> str:
    """At most `limit` bytes of a stream as UTF-8 text; a longer one (/dev/zero) is refused without reading it all."""
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise JobSpecError(source, [f"larger than the limit of {limit:,} bytes (api.max_body_bytes)"])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise JobSpecError(source, ["is not UTF-8 text"]) from None


def read_job_file(path: Path | str, limit: int = DEFAULT_MAX_BYTES) -> str:
    """A job file's text, `-` for stdin; errors are one line naming the file."""
    source = str(path)
    if source == STDIN:
        return read_bounded(sys.stdin.buffer, limit, "<stdin>")
    try:
        with open(path, "rb") as f:
            return read_bounded(f, limit, source)
    except FileNotFoundError:
        raise JobSpecError(source, ["no such file"]) from None
    except IsADirectoryError:
        raise JobSpecError(source, ["is a directory, not a file"]) from None
    except OSError as exc:
        raise JobSpecError(source, [f"cannot read: {exc.strerror}"]) from None


def load_job_file(path: Path | str, limit: int = DEFAULT_MAX_BYTES) -> list[JobSpec]:
    """Every job in a job file (or stdin), all or nothing."""
    source = "<stdin>" if str(path) == STDIN else str(path)
    return parse_job_specs(read_job_file(path, limit), source)


# ---- documents of an API request ----------------------------------------------------------------------


@dataclass(frozen=True)
class FieldProblem:
    """One problem of a submitted body: the field's path (e.g. body[2].spec.queue) and what is wrong."""

    field: str
    message: str


def split_line(line: str) -> tuple[str, str]:
    """("spec.gpus", "must be at least 1") from "spec.gpus: must be at least 1"; ("", line) when no path leads."""
    path, sep, message = line.partition(": ")
    if sep and path and " " not in path:
        return path, message
    return "", line


class InvalidJobs(JobSpecError):
    """A body whose documents are not all valid: every problem with its field path."""

    def __init__(self, problems: Sequence[FieldProblem]) -> None:
        self.problems = list(problems)
        super().__init__([f"{p.field}: {p.message}" if p.field else p.message for p in self.problems])


def documents_of(body: bytes, media_type: str) -> tuple[list[Any], bool]:
    """The job documents of a request body and whether it held a list of them (JSON array or several YAML
    documents); a body that does not parse is an InvalidJobs naming `body`."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidJobs([FieldProblem("body", "is not UTF-8 text")]) from None
    if media_type == "application/json":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise InvalidJobs([FieldProblem("body", f"not valid JSON: {exc}")]) from None
        return (data, True) if isinstance(data, list) else ([data], False)
    try:
        docs = read_yaml_documents(text)
    except ValueError as exc:
        raise InvalidJobs([FieldProblem("body", str(exc))]) from None
    if len(docs) == 1 and isinstance(docs[0], list):
        return docs[0], True
    return docs, len(docs) > 1


def parse_documents(docs: Sequence[Any], many: bool, config: SpilloverConfig) -> list[JobSpec]:
    """Every document as a JobSpec checked against the config, or an InvalidJobs listing every problem; field
    paths start with body[i]. when the body held a list."""
    if not docs:
        raise InvalidJobs([FieldProblem("body", "no job; expected a TrainingJob or a batch/v1 Job, or a list of them")])
    specs: list[JobSpec] = []
    problems: list[FieldProblem] = []
    first_seen: dict[str, int] = {}
    for i, doc in enumerate(docs):
        prefix = f"body[{i}]" if many else ""
        try:
            spec = parse_job_document(doc)
            lines = [f"{p}: {m}" if p else m for p, m in config_problems(spec, config)]
        except JobSpecError as exc:
            lines = exc.errors
            spec = None
        if spec is not None and spec.name in first_seen:
            lines.append(f"metadata.name: '{spec.name}' is already used by body[{first_seen[spec.name]}]")
        for line in lines:
            path, message = split_line(line)
            field = ".".join(x for x in (prefix, path) if x) or "body"
            problems.append(FieldProblem(field, message))
        if spec is not None:
            first_seen.setdefault(spec.name, i)
            specs.append(spec)
    if problems:
        raise InvalidJobs(problems)
    return specs


# ---- checks against the config ------------------------------------------------------------------------


def config_problems(spec: JobSpec, config: SpilloverConfig) -> list[tuple[str, str]]:
    """(field, message) for what no configured queue or cluster could ever serve."""
    queues = [q.name for q in config.queues]
    if spec.queue not in queues:
        return [("spec.queue", f"unknown queue {spec.queue!r}; configured queues: {', '.join(queues)}")]
    offered = _offered(config)
    unknown = [t for t in spec.gpu_types if t not in offered]
    if unknown:
        return [("spec.gpuTypes", f"no cluster offers {', '.join(unknown)}; available: {', '.join(sorted(offered))}")]
    types = spec.gpu_types or list(offered)
    largest = max(offered[t] for t in types)
    if spec.gpus > largest:
        return [("spec.gpus", f"{spec.gpus} GPUs per node, but the largest node for "
                              f"{'/'.join(types) if spec.gpu_types else 'any type'} has {largest}; "
                              f"use nodes: N for a gang of whole nodes")]
    return []


def _offered(config: SpilloverConfig) -> dict[str, int]:
    """GPU type -> the largest GPUs per node any cluster or pool offers."""
    offered: dict[str, int] = {}
    for c in config.clusters:
        shapes = ([(p.gpu_type, p.gpus_per_node) for p in c.pools] if isinstance(c, CloudCluster)
                  else [(g.gpu_type, g.gpus_per_node) for g in c.node_groups])
        for t, n in shapes:
            offered[t] = max(offered.get(t, 0), n)
    return offered


def check_against_config(specs: list[JobSpec], config: SpilloverConfig, source: str) -> None:
    """Reject specs that no configured queue or cluster could ever serve, naming the file and the field."""
    for spec in specs:
        for path, message in config_problems(spec, config):
            if path == "spec.queue":
                raise UnknownQueueError(f"{source}: {path}: {message}")
            raise JobSpecError([f"{source}: {path}: {message}"])


def teams_of(config: SpilloverConfig) -> dict[str, str]:
    """Queue -> the team its jobs belong to."""
    return {q.name: q.team or q.name for q in config.queues}


def submit_specs(store: Store, config: SpilloverConfig, specs: list[JobSpec], *, now: float) -> list[Job]:
    """Store checked specs as queued jobs, all in one transaction."""
    return store.submit(specs, now=now, teams=teams_of(config))


# ---- cancelling ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cancelled:
    job: Job
    outcome: str  # cancelled: it was queued; cancelling: the loop removes it from its cluster
    message: str


def cancel_job(store: Store, ref: str, *, now: float, team: str | None = None) -> Cancelled:
    """Cancel a job by id or name: a queued one at once, a dispatched one once its cluster has removed it."""
    j = store.job(ref, team=team)
    if store.transition(j.id, [JobState.PENDING], JobState.CANCELLED, now=now, message="cancelled by user",
                        finished_at=now):
        return Cancelled(store.job(j.id), "cancelled", f"cancelled {j.id}")
    if store.transition(j.id, [JobState.DISPATCHING, JobState.DISPATCHED, JobState.RUNNING],
                        JobState.CANCELLING, now=now, message="cancel requested by user"):
        return Cancelled(store.job(j.id), "cancelling", f"cancelling {j.id}: the loop removes it from {j.cluster}")
    raise ConflictError(f"job {j.id} is {store.job(j.id).state.value}; only queued or running jobs can be cancelled")
