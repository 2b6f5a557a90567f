"""Job spec files (TrainingJob and annotated batch/v1 Jobs) and the units they are written in."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from spillover.scheduler.config import EXAMPLE_CONFIG, load_config
from spillover.scheduler.errors import JobSpecError, UserError
from spillover.scheduler.jobspec import job_spec_to_yaml, load_job_specs, parse_job_specs
from spillover.scheduler.model import MAX_JOB_NAME, JobSpec
from spillover.scheduler.units import (
    format_cpu,
    format_duration,
    format_memory_gib,
    parse_cpu,
    parse_duration_s,
    parse_memory_gib,
)

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "config" / "examples").glob("*.yaml"))

TRAINING_JOB: dict[str, Any] = {
    "apiVersion": "spillover/v1alpha1",
    "kind": "TrainingJob",
    "metadata": {"name": "bert-finetune"},
    "spec": {
        "queue": "research",
        "image": "ghcr.io/acme/bert:1.4",
        "command": ["python", "train.py"],
        "args": ["--epochs", "3"],
        "env": {"WANDB_MODE": "offline"},
        "gpus": 4,
        "gpuTypes": ["A100", "H100"],
        "cpu": 16,
        "memory": "128Gi",
        "nodes": 2,
        "estimatedRuntime": "3h",
        "priority": 5,
        "checkpointable": True,
    },
}

BATCH_JOB: dict[str, Any] = {
    "apiVersion": "batch/v1",
    "kind": "Job",
    "metadata": {
        "name": "bert-finetune",
        "namespace": "ml",
        "labels": {"team": "research"},
        "annotations": {
            "spillover/queue": "research",
            "spillover/estimated-runtime": "180m",
            "spillover/gpu-types": "A100, H100",
            "spillover/priority": "5",
            "spillover/checkpointable": "true",
            "owner": "ana",
        },
    },
    "spec": {
        "completionMode": "Indexed",
        "parallelism": 2,
        "completions": 2,
        "backoffLimit": 0,
        "template": {
            "spec": {
                "restartPolicy": "Never",
                "containers": [{
                    "name": "train",
                    "image": "ghcr.io/acme/bert:1.4",
                    "command": ["python", "train.py"],
                    "args": ["--epochs", "3"],
                    "env": [{"name": "WANDB_MODE", "value": "offline"}],
                    "resources": {
                        "requests": {"cpu": "16000m", "memory": "131072Mi"},
                        "limits": {"nvidia.com/gpu": "4", "memory": "128Gi"},
                    },
                }],
            },
        },
    },
}

EXPECTED = JobSpec(
    name="bert-finetune",
    queue="research",
    image="ghcr.io/acme/bert:1.4",
    command=["python", "train.py"],
    args=["--epochs", "3"],
    env={"WANDB_MODE": "offline"},
    gpus=4,
    gpu_types=["A100", "H100"],
    cpu=16.0,
    memory_gib=128.0,
    nodes=2,
    estimated_runtime_s=3 * 3600,
    priority=5,
    checkpointable=True,
)


def dump(*docs: dict[str, Any]) -> str:
    return yaml.safe_dump_all(docs, sort_keys=False)


def changed(doc: dict[str, Any], change: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    change(doc)
    return doc


def errors_of(*docs: Any) -> list[str]:
    with pytest.raises(JobSpecError) as info:
        parse_job_specs(yaml.safe_dump_all(docs, sort_keys=False), "job.yaml")
    return info.value.errors


def container(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["template"]["spec"]["containers"][0]


def annotations(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["metadata"]["annotations"]


# ---- the two kinds ----


def test_both_kinds_read_to_the_same_job_spec() -> None:
    assert parse_job_specs(dump(TRAINING_JOB)) == [EXPECTED]
    assert parse_job_specs(dump(BATCH_JOB)) == [EXPECTED]


def test_omitted_fields_take_job_spec_defaults_in_both_kinds() -> None:
    minimal = {
        "apiVersion": "spillover/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": "tiny"},
        "spec": {"queue": "q", "image": "img", "gpus": 1, "estimatedRuntime": 60},
    }
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "tiny", "annotations": {"spillover/queue": "q", "spillover/estimated-runtime": "60"}},
        "spec": {"template": {"spec": {"containers": [{"image": "img", "resources": {"limits": {"nvidia.com/gpu": 1}}}]}}},
    }
    expected = JobSpec(name="tiny", queue="q", image="img", gpus=1, estimated_runtime_s=60)
    assert parse_job_specs(dump(minimal)) == parse_job_specs(dump(job)) == [expected]
    assert (expected.cpu, expected.memory_gib, expected.nodes, expected.checkpointable) == (1.0, 4.0, 1, False)


def test_batch_job_takes_cpu_and_memory_from_limits_when_no_requests() -> None:
    doc = changed(BATCH_JOB, lambda d: container(d)["resources"].update(
        requests={}, limits={"nvidia.com/gpu": 4, "cpu": "500m", "memory": "512Mi"}))
    [spec] = parse_job_specs(dump(doc))
    assert (spec.cpu, spec.memory_gib) == (0.5, 0.5)


def test_batch_job_is_a_gang_only_when_indexed() -> None:
    one = changed(BATCH_JOB, lambda d: d["spec"].update(completionMode="NonIndexed", parallelism=1))
    assert parse_job_specs(dump(one))[0].nodes == 1
    unset = changed(BATCH_JOB, lambda d: d["spec"].pop("parallelism"))
    assert parse_job_specs(dump(unset))[0].nodes == 1


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_job_files_parse_and_fit_the_example_config(path: Path) -> None:
    config = load_config(EXAMPLE_CONFIG)
    specs = load_job_specs(path)
    assert specs
    for spec in specs:
        assert config.queue(spec.queue).name == spec.queue
        assert set(spec.gpu_types) <= config.gpu_types()


def test_example_files_cover_a_gang_and_a_kubernetes_job() -> None:
    specs = [s for p in EXAMPLES for s in load_job_specs(p)]
    texts = " ".join(p.read_text() for p in EXAMPLES)
    assert any(s.nodes > 1 for s in specs)
    assert "kind: Job\n" in texts and "kind: TrainingJob" in texts


# ---- errors in a TrainingJob ----


TRAINING_JOB_ERRORS = [
    pytest.param(lambda d: d["spec"].update(gpus=0), "spec.gpus: must be at least 1 (got 0)", id="zero-gpus"),
    pytest.param(lambda d: d["spec"].update(gpus=4.5), "spec.gpus: must be a whole number (got 4.5)", id="half-gpu"),
    pytest.param(lambda d: d["spec"].pop("queue"), "spec.queue: required", id="no-queue"),
    pytest.param(lambda d: d["spec"].pop("estimatedRuntime"), "spec.estimatedRuntime: required", id="no-runtime"),
    pytest.param(
        lambda d: d["spec"].update(estimatedRuntime="soon"),
        "spec.estimatedRuntime: expected a duration like 90m, 2h30m or seconds (got 'soon')",
        id="bad-runtime",
    ),
    pytest.param(
        lambda d: d["spec"].update(memory="lots"),
        "spec.memory: expected memory like \"128Gi\", \"512Mi\" or \"1Ti\" (got 'lots')",
        id="bad-memory",
    ),
    pytest.param(
        lambda d: d["spec"].update(memory=64),
        "spec.memory: a bare number is bytes; write 64Gi for 64 GiB (expected memory like \"128Gi\", \"512Mi\" or \"1Ti\")",
        id="memory-without-unit",
    ),
    pytest.param(lambda d: d["spec"].update(cpu="0m"), "spec.cpu: must be greater than 0 (got '0m')", id="zero-cpu"),
    pytest.param(lambda d: d["spec"].update(nodes=2000), "spec.nodes: must be at most 1024 (got 2000)", id="huge-gang"),
    pytest.param(lambda d: d["spec"].update(priority=5000), "spec.priority: must be at most 1000 (got 5000)",
                 id="priority-range"),
    pytest.param(lambda d: d["spec"].update(checkpointable="maybe"),
                 "spec.checkpointable: must be true or false (got 'maybe')", id="not-a-bool"),
    pytest.param(lambda d: d["spec"].update(gpuTypes="A100"), "spec.gpuTypes: must be a list (got 'A100')",
                 id="gpu-types-not-a-list"),
    pytest.param(lambda d: d["spec"]["env"].update(EPOCHS=3),
                 "spec.env.EPOCHS: must be a string (got 3); put it in quotes", id="env-number"),
    pytest.param(
        lambda d: d["metadata"].update(name="BERT_finetune"),
        "metadata.name: must be lower-case letters, digits and '-', starting and ending with a letter or digit "
        "(got 'BERT_finetune')",
        id="name-not-dns",
    ),
    pytest.param(lambda d: d["metadata"].update(name="a" * 49),
                 f"metadata.name: must be at most {MAX_JOB_NAME} characters (got 49)", id="name-too-long"),
    pytest.param(
        lambda d: d["spec"].update(gpu_types=["A100"]),
        "spec.gpu_types: unknown key (did you mean 'gpuTypes'?); valid keys: queue, image, command, args, env, "
        "gpus, gpuTypes, cpu, memory, nodes, estimatedRuntime, priority, checkpointable",
        id="unknown-key",
    ),
    pytest.param(lambda d: d["metadata"].update(labels={"a": "b"}), "metadata.labels: unknown key; valid keys: name",
                 id="unknown-metadata-key"),
    pytest.param(
        lambda d: d.update(kind="Job"),
        "kind: must be TrainingJob for apiVersion spillover/v1alpha1 (got 'Job'); expected apiVersion "
        "spillover/v1alpha1 with kind TrainingJob or apiVersion batch/v1 with kind Job",
        id="wrong-kind",
    ),
    pytest.param(
        lambda d: d.update(apiVersion="spillover/v1"),
        "apiVersion: unsupported (got 'spillover/v1'); expected apiVersion spillover/v1alpha1 with kind "
        "TrainingJob or apiVersion batch/v1 with kind Job",
        id="wrong-api-version",
    ),
]


@pytest.mark.parametrize(("change", "expected"), TRAINING_JOB_ERRORS)
def test_training_job_errors_name_the_field(change: Callable[..., Any], expected: str) -> None:
    assert errors_of(changed(TRAINING_JOB, change)) == [expected]


def test_every_error_of_a_document_is_reported_together() -> None:
    def many(d: dict[str, Any]) -> None:
        d["metadata"]["name"] = "Bad"
        d["spec"].update(gpus=0, cpu=-1, image="", extra=1)
        d["spec"].pop("queue")

    errors = errors_of(changed(TRAINING_JOB, many))
    assert [e.split(":")[0] for e in errors] == [
        "metadata.name", "spec.queue", "spec.image", "spec.gpus", "spec.cpu", "spec.extra"
    ]


def test_job_spec_error_is_one_line_naming_the_file() -> None:
    with pytest.raises(JobSpecError) as info:
        parse_job_specs(dump(changed(TRAINING_JOB, lambda d: d["spec"].update(gpus=0))), "train.yaml")
    assert str(info.value) == "train.yaml: spec.gpus: must be at least 1 (got 0)"
    assert isinstance(info.value, UserError) and info.value.exit_code == 2


# ---- errors in a batch/v1 Job ----


CONTAINER = "spec.template.spec.containers[0]"

BATCH_JOB_ERRORS = [
    pytest.param(lambda d: annotations(d).pop("spillover/queue"), "metadata.annotations.spillover/queue: required",
                 id="no-queue"),
    pytest.param(lambda d: annotations(d).pop("spillover/estimated-runtime"),
                 "metadata.annotations.spillover/estimated-runtime: required", id="no-runtime"),
    pytest.param(
        lambda d: annotations(d).update({"spillover/priority": "high"}),
        "metadata.annotations.spillover/priority: must be a whole number (got 'high')",
        id="bad-priority",
    ),
    pytest.param(
        lambda d: annotations(d).update({"spillover/checkpointable": "sometimes"}),
        "metadata.annotations.spillover/checkpointable: must be true or false (got 'sometimes')",
        id="bad-checkpointable",
    ),
    pytest.param(
        lambda d: annotations(d).update({"spillover/gpu_type": "A100"}),
        "metadata.annotations.spillover/gpu_type: unknown Spillover annotation 'spillover/gpu_type' (did you mean 'spillover/gpu-types'?); "
        "valid: spillover/queue, spillover/estimated-runtime, spillover/gpu-types, spillover/priority, "
        "spillover/checkpointable",
        id="unknown-spillover-annotation",
    ),
    pytest.param(lambda d: container(d)["resources"]["limits"].pop("nvidia.com/gpu"),
                 f"{CONTAINER}.resources.limits.nvidia.com/gpu: required", id="no-gpu-limit"),
    pytest.param(lambda d: container(d).pop("resources"),
                 f"{CONTAINER}.resources.limits.nvidia.com/gpu: required", id="no-resources"),
    pytest.param(lambda d: container(d)["resources"]["limits"].update({"nvidia.com/gpu": 0}),
                 f"{CONTAINER}.resources.limits.nvidia.com/gpu: must be at least 1 (got 0)", id="zero-gpus"),
    pytest.param(lambda d: container(d)["resources"]["requests"].update(cpu="two"),
                 f"{CONTAINER}.resources.requests.cpu: expected CPU cores like 16, 0.5 or \"500m\" (got 'two')",
                 id="bad-cpu"),
    pytest.param(lambda d: container(d).pop("image"), f"{CONTAINER}.image: required", id="no-image"),
    pytest.param(
        lambda d: container(d)["env"].append({"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s"}}}),
        f"{CONTAINER}.env[1].valueFrom: not supported: Spillover would run the job without values taken from "
        "secrets or config maps; give value",
        id="env-from-secret",
    ),
    pytest.param(
        lambda d: d["spec"]["template"]["spec"].update(volumes=[{"name": "data"}]),
        "spec.template.spec.volumes: not supported: Spillover would run the job without volumes",
        id="volumes",
    ),
    pytest.param(
        lambda d: d["spec"]["template"]["spec"]["containers"].append({"name": "sidecar", "image": "envoy"}),
        "spec.template.spec.containers: has 2 containers; Spillover runs one container per replica (no sidecars)",
        id="sidecar",
    ),
    pytest.param(lambda d: d["spec"]["template"]["spec"].update(containers=[]),
                 "spec.template.spec.containers: must have at least 1 item (got 0)", id="no-container"),
    pytest.param(
        lambda d: d["spec"].pop("completionMode"),
        "spec.completionMode: must be Indexed when parallelism is 2: Spillover runs parallel pods as a gang of "
        "whole nodes, one indexed replica per node",
        id="parallel-but-not-indexed",
    ),
    pytest.param(lambda d: d["spec"].update(parallelism=0), "spec.parallelism: must be at least 1 (got 0)",
                 id="zero-parallelism"),
    pytest.param(lambda d: d["metadata"].pop("name"), "metadata.name: required", id="no-name"),
]


@pytest.mark.parametrize(("change", "expected"), BATCH_JOB_ERRORS)
def test_batch_job_errors_name_the_manifest_path(change: Callable[..., Any], expected: str) -> None:
    assert errors_of(changed(BATCH_JOB, change)) == [expected]


# ---- files of several documents, and files that are not job specs ----


def test_a_file_of_several_jobs_reads_them_in_order(tmp_path: Path) -> None:
    second = changed(BATCH_JOB, lambda d: d["metadata"].update(name="second"))
    path = tmp_path / "jobs.yaml"
    path.write_text(dump(TRAINING_JOB, second))
    assert [s.name for s in load_job_specs(path)] == ["bert-finetune", "second"]


def test_one_bad_document_rejects_the_whole_file() -> None:
    good = changed(TRAINING_JOB, lambda d: d["metadata"].update(name="good"))
    bad = changed(TRAINING_JOB, lambda d: d["spec"].update(gpus=0))
    with pytest.raises(JobSpecError) as info:
        parse_job_specs(dump(good, bad, good | {"metadata": {"name": "third"}}), "jobs.yaml")
    assert str(info.value) == "jobs.yaml: document 2: spec.gpus: must be at least 1 (got 0)"


def test_errors_of_several_documents_are_reported_together() -> None:
    first = changed(TRAINING_JOB, lambda d: d["spec"].pop("image"))
    second = changed(BATCH_JOB, lambda d: annotations(d).pop("spillover/queue"))
    assert errors_of(first, second) == [
        "document 1: spec.image: required",
        "document 2: metadata.annotations.spillover/queue: required",
    ]


def test_a_name_used_twice_in_one_file_is_an_error() -> None:
    assert errors_of(TRAINING_JOB, BATCH_JOB) == ["document 2: metadata.name: 'bert-finetune' is already used by document 1"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("", "no job in the file; expected apiVersion spillover/v1alpha1 with kind TrainingJob or "
                     "apiVersion batch/v1 with kind Job", id="empty"),
        pytest.param("---\n# nothing\n---\n", "no job in the file", id="only-separators"),
        pytest.param("spec: [unclosed\n", "not valid YAML: expected ',' or ']'", id="not-yaml"),
        pytest.param("kind: Job\nkind: Job\n", "not valid YAML: duplicate key 'kind' (first given on line 1)",
                     id="duplicate-key"),
        pytest.param("just a sentence\n", "must be a mapping with apiVersion and kind", id="a-string"),
        pytest.param("kind: Pod\n", "apiVersion: required; expected apiVersion spillover/v1alpha1", id="no-api-version"),
    ],
)
def test_files_that_are_not_job_specs(text: str, expected: str) -> None:
    with pytest.raises(JobSpecError) as info:
        parse_job_specs(text, "job.yaml")
    assert expected in str(info.value)
    assert str(info.value).startswith("job.yaml: ")


def test_a_missing_job_file(tmp_path: Path) -> None:
    with pytest.raises(JobSpecError) as info:
        load_job_specs(tmp_path / "absent.yaml")
    assert str(info.value) == f"{tmp_path / 'absent.yaml'}: no such file"


# ---- describing a job ----


def test_describe_yaml_is_a_training_job_that_reads_back() -> None:
    text = job_spec_to_yaml(EXPECTED)
    assert yaml.safe_load(text)["spec"]["estimatedRuntime"] == "3h"
    assert yaml.safe_load(text)["spec"]["memory"] == "128Gi"
    assert parse_job_specs(text) == [EXPECTED]


names = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?", fullmatch=True)
words = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20)
job_specs = st.builds(
    JobSpec,
    name=names,
    queue=words,
    image=words,
    command=st.lists(st.text(max_size=10), max_size=3),
    args=st.lists(st.text(max_size=10), max_size=3),
    env=st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3),
    gpus=st.integers(1, 64),
    gpu_types=st.lists(st.from_regex(r"[A-Z][A-Za-z0-9-]{0,10}", fullmatch=True), max_size=3),
    cpu=st.floats(min_value=0.001, max_value=1024) | st.integers(1, 1024).map(float),
    memory_gib=st.floats(min_value=1e-3, max_value=65536) | st.integers(1, 65536).map(float),
    nodes=st.integers(1, 1024),
    estimated_runtime_s=st.floats(min_value=1e-3, max_value=366 * 86400) | st.integers(1, 366 * 86400).map(float),
    priority=st.integers(-1000, 1000),
    checkpointable=st.booleans(),
)


@given(job_specs)
def test_any_job_spec_survives_describe_and_submit(spec: JobSpec) -> None:
    assert parse_job_specs(job_spec_to_yaml(spec)) == [spec]


# ---- units ----


@pytest.mark.parametrize(
    ("parse", "text", "value"),
    [
        (parse_cpu, "500m", 0.5),
        (parse_cpu, 16, 16.0),
        (parse_cpu, "2", 2.0),
        (parse_cpu, 0.25, 0.25),
        (parse_memory_gib, "64Gi", 64.0),
        (parse_memory_gib, "512Mi", 0.5),
        (parse_memory_gib, "1Ti", 1024.0),
        (parse_memory_gib, "1G", 1e9 / 2**30),
        (parse_memory_gib, "1.5Gi", 1.5),
        (parse_memory_gib, 2**31, 2.0),
        (parse_memory_gib, "2147483648", 2.0),
        (parse_duration_s, "2h30m", 9000.0),
        (parse_duration_s, "90m", 5400.0),
        (parse_duration_s, "45s", 45.0),
        (parse_duration_s, "1d", 86400.0),
        (parse_duration_s, "1.5h", 5400.0),
        (parse_duration_s, "1d2h3m4s", 93784.0),
        (parse_duration_s, 3600, 3600.0),
        (parse_duration_s, "3600", 3600.0),
    ],
)
def test_units_table(parse: Callable[[Any], float], text: Any, value: float) -> None:
    assert parse(text) == pytest.approx(value)


@pytest.mark.parametrize(
    ("parse", "text", "message"),
    [
        (parse_duration_s, "soon", "expected a duration like 90m, 2h30m or seconds (got 'soon')"),
        (parse_duration_s, "1h2d", "expected a duration like 90m, 2h30m or seconds"),
        (parse_duration_s, "-5m", "expected a duration like 90m, 2h30m or seconds"),
        (parse_duration_s, -5, "expected a duration like 90m, 2h30m or seconds (got -5)"),
        (parse_duration_s, True, "expected a duration like 90m, 2h30m or seconds (got true)"),
        (parse_cpu, "2 cores", "expected CPU cores like 16, 0.5 or \"500m\" (got '2 cores')"),
        (parse_memory_gib, "64GB", "expected memory like \"128Gi\", \"512Mi\" or \"1Ti\" (got '64GB')"),
        (parse_memory_gib, 512, "a bare number is bytes; write 512Gi for 512 GiB"),
        (parse_memory_gib, [64], "expected memory like"),
    ],
)
def test_unit_errors_say_what_is_expected(parse: Callable[[Any], float], text: Any, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse(text)
    assert message in str(info.value)


def test_units_print_as_people_write_them() -> None:
    assert (format_duration(9000), format_duration(45), format_duration(90061)) == ("2h30m", "45s", "1d1h1m1s")
    assert (format_memory_gib(128.0), format_memory_gib(0.5)) == ("128Gi", "512Mi")
    assert (format_cpu(16.0), format_cpu(0.5)) == (16, "500m")


@given(st.floats(min_value=0, max_value=1e7, exclude_min=True))
def test_durations_read_back_exactly(seconds: float) -> None:
    assert parse_duration_s(format_duration(seconds)) == seconds


@given(st.floats(min_value=1e-6, max_value=1e6))
def test_memory_reads_back_exactly(gib: float) -> None:
    assert parse_memory_gib(format_memory_gib(gib)) == gib
