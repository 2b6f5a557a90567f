"""Job spec files: Spillover's TrainingJob and annotated Kubernetes batch/v1 Jobs, read into `JobSpec`s."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from spillover.scheduler.errors import (
    JobSpecError,
    custom_error,
    format_validation_error,
    unknown_name_message,
    validate_with_extra_errors,
)
from spillover.scheduler.model import DNS_LABEL, JobSpec
from spillover.scheduler.units import format_cpu, format_duration, format_memory_gib, parse_cpu, parse_duration_s, parse_memory_gib

API_VERSION = "spillover/v1alpha1"
KINDS = {API_VERSION: "TrainingJob", "batch/v1": "Job"}


# ---- YAML reading shared by job spec and config files ----


class StrictYamlLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (plain YAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            try:
                key = self.construct_object(key_node, deep=True)
                first = seen.setdefault(key, key_node.start_mark.line + 1)
            except TypeError:  # an unhashable key; SafeLoader reports it below
                continue
            if first != key_node.start_mark.line + 1:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key}' (first given on line {first})", key_node.start_mark
                )
        return super().construct_mapping(node, deep=deep)


def read_yaml_documents(text: str) -> list[Any]:
    """The non-empty documents of a YAML stream; a syntax error is a ValueError of one line with its position."""
    try:
        return [doc for doc in yaml.load_all(text, Loader=StrictYamlLoader) if doc is not None]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ValueError(f"not valid YAML: {exc.problem or exc.context}{where}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"not valid YAML: {' '.join(str(exc).split())}") from None


def read_text(path: Path | str) -> str:
    """A user's file as text, or a ValueError saying in a few words why it cannot be read."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError("no such file") from None
    except IsADirectoryError:
        raise ValueError("is a directory, not a file") from None
    except UnicodeDecodeError:
        raise ValueError("is not UTF-8 text") from None
    except OSError as exc:
        raise ValueError(f"cannot read: {exc.strerror}") from None


# ---- field types: JobSpec's own bounds, plus parsing of the units users write ----


def _like(field: str, base: Any, *extra: Any) -> Any:
    """`base` with the constraints JobSpec puts on `field`, so both agree on what is valid."""
    return Annotated[(base, *extra, *JobSpec.model_fields[field].metadata)]


def _dns_label(value: str) -> str:
    if not DNS_LABEL.match(value):
        raise ValueError(
            f"must be lower-case letters, digits and '-', starting and ending with a letter or digit (got '{value}')"
        )
    return value


def _comma_list(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def _strip_items(values: list[str]) -> list[str]:
    return [v.strip() for v in values if v.strip()]


JobName = _like("name", str, AfterValidator(_dns_label))
Queue = _like("queue", str)
Image = _like("image", str)
Gpus = _like("gpus", int)
GpuTypes = Annotated[list[str], AfterValidator(_strip_items)]
Cpu = _like("cpu", float, BeforeValidator(parse_cpu))
Memory = _like("memory_gib", float, BeforeValidator(parse_memory_gib))
Nodes = _like("nodes", int)
Runtime = _like("estimated_runtime_s", float, BeforeValidator(parse_duration_s))
Priority = _like("priority", int)

_DEFAULT_CPU = JobSpec.model_fields["cpu"].default
_DEFAULT_MEMORY = JobSpec.model_fields["memory_gib"].default


def _build(fields: dict[str, Any], aliases: Mapping[str, str]) -> JobSpec:
    """JobSpec from parsed fields; its own checks are reported at the user's paths."""
    try:
        return JobSpec(**fields)
    except ValidationError as exc:
        raise _DocumentError(format_validation_error(exc, aliases=aliases)) from None


class _DocumentError(Exception):
    def __init__(self, errors: list[str]) -> None:
        self.errors = errors


# ---- kind: TrainingJob ----


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TrainingJobMetadata(_Strict):
    name: JobName


class TrainingJobBody(_Strict):
    """`spec` of a TrainingJob; resources are per replica and a gang has `nodes` replicas, one per node."""

    queue: Queue
    image: Image
    command: list[str] = Field(default_factory=list)
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    gpus: Gpus
    gpu_types: GpuTypes = Field(default_factory=list, alias="gpuTypes")
    cpu: Cpu = _DEFAULT_CPU
    memory: Memory = _DEFAULT_MEMORY
    nodes: Nodes = 1
    estimated_runtime: Runtime = Field(alias="estimatedRuntime")
    priority: Priority = 0
    checkpointable: bool = False


# Where each JobSpec field comes from in a TrainingJob, for errors JobSpec itself reports.
_TRAINING_JOB_PATHS = {
    "name": "metadata.name",
    "gpu_types": "spec.gpuTypes",
    "memory_gib": "spec.memory",
    "estimated_runtime_s": "spec.estimatedRuntime",
    **{f: f"spec.{f}" for f in ("queue", "image", "command", "args", "env", "gpus", "cpu", "nodes")},
    **{f: f"spec.{f}" for f in ("priority", "checkpointable")},
}


class TrainingJob(_Strict):
    """Spillover's own job document (`apiVersion: spillover/v1alpha1`, `kind: TrainingJob`)."""

    api_version: Literal["spillover/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["TrainingJob"]
    metadata: TrainingJobMetadata
    spec: TrainingJobBody

    def to_job_spec(self) -> JobSpec:
        s = self.spec
        return _build(
            dict(
                name=self.metadata.name,
                queue=s.queue,
                image=s.image,
                command=s.command,
                args=s.args,
                env=s.env,
                gpus=s.gpus,
                gpu_types=s.gpu_types,
                cpu=s.cpu,
                memory_gib=s.memory,
                nodes=s.nodes,
                estimated_runtime_s=s.estimated_runtime,
                priority=s.priority,
                checkpointable=s.checkpointable,
            ),
            _TRAINING_JOB_PATHS,
        )


# ---- kind: Job (batch/v1) with spillover/* annotations ----


class _K8s(BaseModel):
    # A Kubernetes manifest carries many fields Spillover has no use for (labels, backoffLimit, ...).
    model_config = ConfigDict(extra="ignore")


# Manifest fields Spillover cannot carry over: the Job it creates would silently run without them.
_UNSUPPORTED = {
    "valueFrom": "values taken from secrets or config maps; give value",
    "envFrom": "an environment taken from secrets or config maps",
    "volumeMounts": "volume mounts",
    "initContainers": "init containers",
    "volumes": "volumes",
}


def _refuse(cls: type, value: Any, info: ValidationInfo) -> Any:
    if value:
        raise ValueError(f"not supported: Spillover would run the job without {_UNSUPPORTED[info.field_name]}")
    return value


ANNOTATIONS = {
    "queue": "spillover/queue",
    "estimated_runtime": "spillover/estimated-runtime",
    "gpu_types": "spillover/gpu-types",
    "priority": "spillover/priority",
    "checkpointable": "spillover/checkpointable",
}


class JobAnnotations(BaseModel):
    """The `spillover/*` annotations of a batch/v1 Job; other annotations are left alone."""

    model_config = ConfigDict(extra="allow")

    queue: Queue = Field(alias=ANNOTATIONS["queue"])
    estimated_runtime: Runtime = Field(alias=ANNOTATIONS["estimated_runtime"])
    gpu_types: Annotated[GpuTypes, BeforeValidator(_comma_list)] = Field(
        default_factory=list, alias=ANNOTATIONS["gpu_types"]
    )
    priority: Priority = Field(default=0, alias=ANNOTATIONS["priority"])
    checkpointable: bool = Field(default=False, alias=ANNOTATIONS["checkpointable"])

    @model_validator(mode="wrap")
    @classmethod
    def _no_unknown_spillover_keys(cls, data: Any, handler: Any) -> Any:
        known = list(ANNOTATIONS.values())
        unknown = [
            custom_error((key,), unknown_name_message("Spillover annotation", key, known, "valid"), value)
            for key, value in (data.items() if isinstance(data, Mapping) else ())
            if isinstance(key, str) and key.startswith("spillover/") and key not in known
        ]
        return validate_with_extra_errors(handler, data, unknown, cls.__name__)


class _JobMetadata(_K8s):
    name: JobName
    annotations: JobAnnotations = Field(default_factory=dict, validate_default=True)


class _EnvVar(_K8s):
    name: Annotated[str, Field(min_length=1)]
    value: str = ""
    valueFrom: Any = None  # noqa: N815 (manifest spelling)
    _refuse = field_validator("valueFrom")(classmethod(_refuse))


class _Limits(_K8s):
    model_config = ConfigDict(extra="allow")
    gpus: Gpus = Field(alias="nvidia.com/gpu")
    cpu: Cpu | None = None
    memory: Memory | None = None


class _Requests(_K8s):
    cpu: Cpu | None = None
    memory: Memory | None = None


class _Resources(_K8s):
    limits: _Limits = Field(default_factory=dict, validate_default=True)
    requests: _Requests = Field(default_factory=_Requests)


class _Container(_K8s):
    image: Image
    command: list[str] = Field(default_factory=list)
    args: list[str] = Field(default_factory=list)
    env: list[_EnvVar] = Field(default_factory=list)
    resources: _Resources = Field(default_factory=dict, validate_default=True)
    envFrom: Any = None  # noqa: N815
    volumeMounts: Any = None  # noqa: N815
    _refuse = field_validator("envFrom", "volumeMounts")(classmethod(_refuse))


def _one_container(containers: Any) -> Any:
    if isinstance(containers, list) and len(containers) > 1:
        raise ValueError(
            f"has {len(containers)} containers; Spillover runs one container per replica (no sidecars)"
        )
    return containers


class _PodSpec(_K8s):
    containers: Annotated[list[_Container], BeforeValidator(_one_container), Field(min_length=1)]
    initContainers: Any = None  # noqa: N815
    volumes: Any = None
    _refuse = field_validator("initContainers", "volumes")(classmethod(_refuse))


class _PodTemplate(_K8s):
    spec: _PodSpec


class _BatchJobBody(_K8s):
    template: _PodTemplate
    parallelism: Nodes | None = None
    # validated even when omitted: the default (NonIndexed) conflicts with parallelism > 1
    completionMode: Literal["NonIndexed", "Indexed"] = Field(default="NonIndexed", validate_default=True)  # noqa: N815

    @field_validator("completionMode")
    @classmethod
    def _parallel_means_gang(cls, mode: str, info: ValidationInfo) -> str:
        parallelism = info.data.get("parallelism")
        if mode != "Indexed" and parallelism is not None and parallelism > 1:
            raise ValueError(
                f"must be Indexed when parallelism is {parallelism}: Spillover runs parallel pods as a gang "
                "of whole nodes, one indexed replica per node"
            )
        return mode


_CONTAINER = "spec.template.spec.containers[0]"
# Where each JobSpec field comes from in a batch/v1 Job, for errors JobSpec itself reports.
_BATCH_JOB_PATHS = {
    "name": "metadata.name",
    **{f: f"metadata.annotations.{a}" for f, a in ANNOTATIONS.items()},
    "estimated_runtime_s": f"metadata.annotations.{ANNOTATIONS['estimated_runtime']}",
    "image": f"{_CONTAINER}.image",
    "command": f"{_CONTAINER}.command",
    "args": f"{_CONTAINER}.args",
    "env": f"{_CONTAINER}.env",
    "gpus": f"{_CONTAINER}.resources.limits.nvidia.com/gpu",
    "cpu": f"{_CONTAINER}.resources.requests.cpu",
    "memory_gib": f"{_CONTAINER}.resources.requests.memory",
    "nodes": "spec.parallelism",
}


class BatchJob(_K8s):
    """A Kubernetes batch/v1 Job whose `spillover/*` annotations say where and how long it runs."""

    api_version: Literal["batch/v1"] = Field(alias="apiVersion")
    kind: Literal["Job"]
    metadata: _JobMetadata
    spec: _BatchJobBody

    def to_job_spec(self) -> JobSpec:
        annotations = self.metadata.annotations
        container = self.spec.template.spec.containers[0]
        requests, limits = container.resources.requests, container.resources.limits
        cpu = next((v for v in (requests.cpu, limits.cpu) if v is not None), _DEFAULT_CPU)
        memory = next((v for v in (requests.memory, limits.memory) if v is not None), _DEFAULT_MEMORY)
        indexed = self.spec.completionMode == "Indexed"
        return _build(
            dict(
                name=self.metadata.name,
                queue=annotations.queue,
                image=container.image,
                command=container.command,
                args=container.args,
                env={var.name: var.value for var in container.env},
                gpus=limits.gpus,
                gpu_types=annotations.gpu_types,
                cpu=cpu,
                memory_gib=memory,
                nodes=(self.spec.parallelism or 1) if indexed else 1,
                estimated_runtime_s=annotations.estimated_runtime,
                priority=annotations.priority,
                checkpointable=annotations.checkpointable,
            ),
            _BATCH_JOB_PATHS,
        )


_DOCUMENTS: dict[str, type[TrainingJob] | type[BatchJob]] = {API_VERSION: TrainingJob, "batch/v1": BatchJob}
_ACCEPTED = " or ".join(f"apiVersion {v} with kind {k}" for v, k in KINDS.items())


def _document(doc: Any) -> JobSpec:
    if not isinstance(doc, Mapping):
        raise _DocumentError([f"must be a mapping with apiVersion and kind; expected {_ACCEPTED}"])
    version, kind = doc.get("apiVersion"), doc.get("kind")
    if not isinstance(version, str) or version not in KINDS:  # a list or a mapping is not hashable
        got = "required" if version is None else f"unsupported (got {version!r})"
        raise _DocumentError([f"apiVersion: {got}; expected {_ACCEPTED}"])
    if kind != KINDS[version]:
        got = "required" if kind is None else f"must be {KINDS[version]} for apiVersion {version} (got {kind!r})"
        raise _DocumentError([f"kind: {got}; expected {_ACCEPTED}"])
    model = _DOCUMENTS[version]
    try:
        parsed = model.model_validate(doc)
    except ValidationError as exc:
        raise _DocumentError(format_validation_error(exc, model=model)) from None
    return parsed.to_job_spec()


def parse_job_document(doc: Any) -> JobSpec:
    """One already-parsed document (a TrainingJob or a batch/v1 Job) as a JobSpec, or a JobSpecError whose
    `.errors` are "field.path: message" lines without a source."""
    try:
        return _document(doc)
    except _DocumentError as exc:
        raise JobSpecError(exc.errors) from None


def parse_job_specs(text: str, source: str = "<input>") -> list[JobSpec]:
    """Every job in a YAML stream of one or more documents, or a JobSpecError if any document is invalid."""
    try:
        docs = read_yaml_documents(text)
    except ValueError as exc:
        raise JobSpecError(source, [str(exc)]) from None
    if not docs:
        raise JobSpecError(source, [f"no job in the file; expected {_ACCEPTED}"])
    specs: list[JobSpec] = []
    errors: list[str] = []
    first_seen: dict[str, int] = {}
    for number, doc in enumerate(docs, start=1):
        where = f"document {number}: " if len(docs) > 1 else ""
        try:
            spec = _document(doc)
        except _DocumentError as exc:
            errors.extend(where + e for e in exc.errors)
            continue
        if spec.name in first_seen:
            errors.append(f"{where}metadata.name: '{spec.name}' is already used by document {first_seen[spec.name]}")
        first_seen.setdefault(spec.name, number)
        specs.append(spec)
    if errors:
        raise JobSpecError(source, errors)
    return specs


def load_job_specs(path: Path | str) -> list[JobSpec]:
    """Every job in a job spec file; all-or-nothing, as `parse_job_specs`."""
    try:
        text = read_text(path)
    except ValueError as exc:
        raise JobSpecError(str(path), [str(exc)]) from None
    return parse_job_specs(text, str(path))


def job_spec_to_yaml(spec: JobSpec) -> str:
    """The job as a TrainingJob document; it reads back to an equal JobSpec."""
    body: dict[str, Any] = {"queue": spec.queue, "image": spec.image}
    if spec.command:
        body["command"] = list(spec.command)
    if spec.args:
        body["args"] = list(spec.args)
    if spec.env:
        body["env"] = dict(spec.env)
    body["gpus"] = spec.gpus
    if spec.gpu_types:
        body["gpuTypes"] = list(spec.gpu_types)
    body["cpu"] = format_cpu(spec.cpu)
    body["memory"] = format_memory_gib(spec.memory_gib)
    body["nodes"] = spec.nodes
    body["estimatedRuntime"] = format_duration(spec.estimated_runtime_s)
    body["priority"] = spec.priority
    body["checkpointable"] = spec.checkpointable
    doc = {"apiVersion": API_VERSION, "kind": "TrainingJob", "metadata": {"name": spec.name}, "spec": body}
    # Non-ASCII is escaped: PyYAML would write some characters (NEL, U+2028) raw and read them back as spaces.
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=False)
