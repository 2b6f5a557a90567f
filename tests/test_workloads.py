"""Workload loaders: the canonical CSV, Philly, Helios, PAI 2020 and Alibaba GPU 2023 traces read into jobs, bad
rows reported by line and skipped (or raised in strict mode), filtered rows counted, and jobs replayed as
arrivals with seeded estimate errors."""

from __future__ import annotations

import gzip
import math
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import make_config
from spillover.scheduler.errors import UserError
from spillover.scheduler.model import DNS_LABEL, MAX_JOB_NAME, JobSpec, JobState
from spillover.scheduler.store import Store
from spillover.scheduler.wiring import build_providers
from spillover.simulations.runner import run_simulation
from spillover.simulations.workloads import (
    FORMATS,
    MAX_RUNTIME_S,
    TraceJob,
    WorkloadError,
    WorkloadRowError,
    detect_format,
    job_names,
    load_workload,
    to_arrivals,
)
from spillover.simulations.workloads.common import queue_names

TRACES = Path(__file__).parent / "data" / "traces"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "workloads"
CANONICAL = TRACES / "canonical.csv"
PHILLY = TRACES / "philly" / "cluster_job_log"
VENUS = TRACES / "helios" / "Venus" / "cluster_log.csv"
SATURN = TRACES / "helios" / "Saturn" / "cluster_log.csv"
PAI = TRACES / "pai" / "pai_job_table.csv"
OPENB = TRACES / "openb_pod_list_default.csv"


def by_id(jobs: list[TraceJob]) -> dict[str, TraceJob]:
    return {j.job_id: j for j in jobs}


def lines_of(report) -> list[tuple[int, str]]:
    return [(p.line, p.field) for p in report.problems]


# ---- canonical CSV ----


def test_canonical_keeps_good_rows_and_reports_bad_ones_by_line():
    jobs, report = load_workload(CANONICAL)
    assert report.format == "canonical"
    assert [j.job_id for j in jobs] == ["c001", "c002", "c003", "c004", "c012"]
    c002, c004 = by_id(jobs)["c002"], by_id(jobs)["c004"]
    assert (c002.submit_time_s, c002.gpus, c002.duration_s, c002.queue) == (12.5, 4, 7200.0, "research")
    assert c002.model == "Transformer (batch size 128)"
    assert c004.queue == "platform-team" and c004.model == "LM (batch size 20)"
    assert by_id(jobs)["c003"].model is None
    assert lines_of(report) == [(6, "gpus"), (7, "submit_time_s"), (8, "duration_s"), (10, "duration_s"),
                                (11, "gpus"), (12, "row"), (13, "job_id"), (14, "queue"), (16, "duration_s")]
    assert report.rows == 14 and report.jobs == 5 and report.skipped == 9 and not report.filtered
    messages = {p.line: p.message for p in report.problems}
    assert messages[6] == "must be a whole number >= 1 (got 'x')"
    assert messages[7] == "must be at least 0 (got '-5')"
    assert messages[13] == "duplicate of line 3 ('c002')"
    assert messages[12].startswith("has 5 fields; expected 6")


def test_canonical_times_are_kept_as_written_not_shifted(tmp_path):
    f = tmp_path / "w.csv"
    f.write_text("job_id,submit_time_s,gpus,duration_s,queue\na,100,1,60,research\nb,50,2,60,research\n")
    jobs, _ = load_workload(f)
    assert [(j.job_id, j.submit_time_s) for j in jobs] == [("b", 50.0), ("a", 100.0)]


def test_summary_is_one_line_with_the_first_problems():
    _, report = load_workload(CANONICAL)
    text = report.summary()
    assert "\n" not in text
    assert text.startswith(f"{CANONICAL}: 5 jobs from 14 rows")
    assert "9 rows skipped: line 6: gpus: must be a whole number >= 1 (got 'x'); line 7: submit_time_s" in text
    assert "(first 5 shown)" in text and "line 13" not in text


@pytest.mark.parametrize("name", ["gavel-synth-dev.csv", "philly-vc.csv"])
def test_shared_workloads_load_completely(name):
    path = SHARED / name
    if not path.exists():
        pytest.skip(f"{path} is not here")
    jobs, report = load_workload(path)
    expected = {"gavel-synth-dev.csv": 20_000, "philly-vc.csv": 13_716}[name]
    assert report.format == "canonical" and report.ok and report.skipped == 0 and not report.filtered
    assert len(jobs) == report.jobs == report.rows == expected
    assert all(DNS_LABEL.match(j.queue) for j in jobs)
    replay = to_arrivals(jobs)
    assert len(replay.arrivals) == expected and not replay.too_large


# ---- Philly ----


def test_philly_uses_the_last_attempt_and_the_earliest_submission():
    jobs, report = load_workload(PHILLY)
    assert report.format == "philly"
    got = by_id(jobs)
    assert list(got) == ["application_1506638472019_14199", "application_1506638472019_10238",
                         "application_1506638472019_15001", "application_1506638472019_15012"]
    first = got["application_1506638472019_14199"]
    # the earliest submission (01:11:39); the second attempt ran 2017-10-07 01:13:30 -> 2017-10-09 06:53:12
    assert (first.submit_time_s, first.gpus, first.duration_s) == (0.0, 8, 2 * 86400 + 5 * 3600 + 39 * 60 + 42)
    assert first.queue == "ee9e8c" and first.status == "Pass"
    single = got["application_1506638472019_10238"]
    assert (single.submit_time_s, single.gpus, single.duration_s) == (13 * 3600 + 52 * 60 + 47, 1, 45 * 60 + 24)
    assert got["application_1506638472019_15001"].gpus == 16  # two servers of 8
    assert got["application_1506638472019_15001"].status == "Killed"
    assert got["application_1506638472019_15012"].gpus == 2  # the last attempt's, not the first's 4
    assert got["application_1506638472019_15012"].duration_s == 3.5 * 3600


def test_philly_filters_jobs_that_never_ran_apart_from_bad_rows():
    _, report = load_workload(PHILLY)
    assert report.filtered == {"never ran (no attempts)": 2, "still running at the snapshot (no end time)": 1,
                               "last attempt has no start time": 1, "no GPUs in the last attempt": 1,
                               "ran for 0 s": 1}
    assert lines_of(report) == [(187, "status"), (208, "submitted_time"), (229, "attempts[0].end_time"),
                                (250, "attempts[0].detail[0].gpus"), (269, "jobid"), (326, "job"), (327, "jobid")]
    assert report.rows == 17 and report.jobs == 4 and report.skipped == 7
    text = PHILLY.read_text().splitlines()
    assert '"Unknown"' in text[187] and text[325].strip() == "42,"  # the lines named are those of the records


def test_philly_reads_json_lines_and_gzip(tmp_path):
    import json

    records = json.loads(PHILLY.read_text())
    f = tmp_path / "jobs.jsonl.gz"
    with gzip.open(f, "wt") as out:
        for r in records:
            out.write(json.dumps(r) + "\n")
    jobs, report = load_workload(f)
    assert report.format == "philly" and len(jobs) == 4
    assert [p.line for p in report.problems] == [9, 10, 11, 12, 13, 15, 16]


def test_philly_syntax_error_keeps_what_came_before(tmp_path):
    content = PHILLY.read_text()
    f = tmp_path / "cluster_job_log"
    f.write_text(content[: content.index('"application_1506638472019_15012"') + 10])  # cut mid-record
    jobs, report = load_workload(f)
    assert len(jobs) == 3
    assert report.problems[-1].field == "json" and report.problems[-1].line == 292  # where the cut string starts
    with pytest.raises(WorkloadRowError, match=r"line 187: status: must be one of 'Pass', 'Killed', 'Failed'"):
        load_workload(f, strict=True)


# ---- Helios ----


def test_helios_with_vc_column():
    jobs, report = load_workload(VENUS)
    assert report.format == "helios"
    got = by_id(jobs)
    assert list(got) == ["1425511", "1425512", "1425513", "1425514", "1425517", "1425518", "1425519", "1425520"]
    assert (got["1425511"].submit_time_s, got["1425511"].duration_s, got["1425511"].queue) == (0.0, 36848.0, "vcjkd")
    assert (got["1425512"].submit_time_s, got["1425512"].gpus, got["1425512"].queue) == (26.0, 4, "vchbv")
    assert (got["1425514"].submit_time_s, got["1425514"].gpus) == (539.0, 16)
    assert got["1425519"].status == "CANCELLED"  # "CANCELLED by 30012"
    assert got["1425520"].duration_s == 3600.0  # no duration: end - start
    assert report.filtered == {"CPU jobs (gpu_num 0)": 1, "never started (no start time)": 1, "ran for 0 s": 1}
    assert lines_of(report) == [(12, "gpu_num"), (13, "submit_time"), (14, "end_time"), (15, "state"),
                                (16, "duration"), (17, "vc")]
    assert report.problems[2].message.startswith("before start_time")


def test_helios_without_vc_uses_the_user_and_keeps_case_variants_apart():
    jobs, report = load_workload(SATURN)
    got = by_id(jobs)
    assert got["2100001"].queue == "ua1b2" and got["2100002"].gpus == 32
    assert got["2100002"].submit_time_s == 593.0  # 00:10:00 after the first submission at 00:00:07
    # uE5f6 and UE5F6 are different users: both get a hashed label instead of sharing "ue5f6"
    assert got["2100005"].queue != got["2100007"].queue
    assert got["2100005"].queue.startswith("ue5f6-") and got["2100007"].queue.startswith("ue5f6-")
    assert lines_of(report) == [(7, "row")]
    assert report.filtered == {"CPU jobs (gpu_num 0)": 1, "never started (no start time)": 1}


# ---- PAI 2020 ----


def test_pai_joins_the_task_table_next_to_the_job_table():
    jobs, report = load_workload(PAI)
    assert report.format == "pai"
    got = by_id(jobs)
    assert list(got) == ["a1c3e5f7091b2d4f6a8c0e2f", "4f057009a5d481acec67b088", "b2d4f6a8c0e2a4c6e8a0c2e4",
                         "d0f2b4d6f8b0d2f4b6d8f0b2", "4b3f04b66a525d2df903eb16"]
    ps_worker = got["a1c3e5f7091b2d4f6a8c0e2f"]  # ps without GPU + 2 workers at 50%: one GPU, longest task
    assert (ps_worker.submit_time_s, ps_worker.gpus, ps_worker.duration_s) == (0.0, 1, 5985.0)
    assert ps_worker.queue == "7b1f2c3d4e5f" and ps_worker.gpu_type == "T4"
    half = got["4f057009a5d481acec67b088"]  # the README's example task: 50% of a MISC GPU for 38 s
    assert (half.submit_time_s, half.gpus, half.duration_s, half.gpu_type) == (160.0, 1, 38.0, None)
    big = got["b2d4f6a8c0e2a4c6e8a0c2e4"]  # 4 instances x 400%
    assert (big.gpus, big.duration_s, big.gpu_type, big.submit_time_s) == (16, 86400.0, "V100M32", 60990.0)
    assert got["d0f2b4d6f8b0d2f4b6d8f0b2"].gpu_type is None  # T4 and P100 tasks: any
    assert got["d0f2b4d6f8b0d2f4b6d8f0b2"].gpus == 2
    assert got["4b3f04b66a525d2df903eb16"].submit_time_s == 4550879.0 - 1739000.0
    assert report.filtered == {"CPU-only (no GPU planned)": 1, "no tasks in the task table": 1,
                               "no task with a start and an end time": 1, "ran for 0 s": 1}
    assert [(p.file, p.line, p.field) for p in report.problems] == [
        (None, 8, "status"), (None, 9, "start_time"), (None, 14, "row"),
        ("pai_task_table.csv", 8, "plan_gpu"), ("pai_task_table.csv", 9, "end_time"), ("pai_task_table.csv", 14, "row")]
    assert report.skipped == 5 and report.rows == 14  # the jobs of the two bad task rows are skipped
    assert "b8d0f2b4d6f8b0d2f4b6d8f0" not in got and "c9e1a3c5e7a9c1e3a5c7e9a1" not in got


def test_pai_with_header_rows_and_an_explicit_task_table(tmp_path):
    jobs_f, tasks_f = tmp_path / "jobs.csv", tmp_path / "elsewhere" / "tasks.csv"
    tasks_f.parent.mkdir()
    jobs_f.write_text("job_name,inst_id,user,status,start_time,end_time\n" + PAI.read_text())
    tasks_f.write_text("job_name,task_name,inst_num,status,start_time,end_time,plan_cpu,plan_mem,plan_gpu,gpu_type\n"
                       + (PAI.parent / "pai_task_table.csv").read_text())
    with pytest.raises(WorkloadError, match="task table"):
        load_workload(jobs_f, "pai")
    jobs, report = load_workload(jobs_f, "pai", task_table=tasks_f)
    assert len(jobs) == 5 and report.rows == 14
    assert [(p.file, p.line) for p in report.problems][:3] == [(None, 9), (None, 10), (None, 15)]
    assert report.problems[3].file == "tasks.csv" and report.problems[3].line == 9


def test_pai_strict_names_the_task_table():
    with pytest.raises(WorkloadRowError) as info:
        load_workload(PAI, strict=True)
    assert info.value.line == 8 and info.value.field == "status"  # job table rows come first


def test_a_task_table_is_not_loaded_on_its_own():
    with pytest.raises(WorkloadError, match="PAI task table"):
        load_workload(PAI.parent / "pai_task_table.csv")


# ---- Alibaba GPU 2023 ----


def test_alibaba_gpu_pods():
    jobs, report = load_workload(OPENB)
    assert report.format == "alibaba-gpu"
    got = by_id(jobs)
    assert len(got) == 10
    first = got["openb-pod-0000"]
    assert (first.submit_time_s, first.gpus, first.duration_s, first.queue) == (0.0, 1, 12537496.0, "ls")
    shared = got["openb-pod-0001"]  # 460 milli-GPU: a whole GPU in a replay
    assert (shared.gpus, shared.submit_time_s, shared.duration_s) == (1, 427061.0, 12902960.0 - 427061.0)
    assert got["openb-pod-0012"].duration_s == 10959245 - 6595531  # from scheduled, not created
    assert (got["openb-pod-0017"].gpus, got["openb-pod-0017"].queue) == (8, "burstable")
    assert got["openb-pod-0021"].gpu_type == "G2|P100|T4|V100M16|V100M32"
    assert got["openb-pod-0307"].gpu_type is None  # "nan"
    assert {j.queue for j in jobs} == {"ls", "be", "burstable", "guaranteed"}
    assert report.filtered == {"CPU pods (num_gpu 0)": 2, "never scheduled": 2, "ran for 0 s": 1}
    assert lines_of(report) == [(15, "num_gpu"), (16, "pod_phase"), (17, "deletion_time"), (18, "creation_time"),
                                (19, "qos"), (20, "row")]


# ---- strict mode, detection, file errors ----


@pytest.mark.parametrize("path, line, field", [
    (CANONICAL, 6, "gpus"), (PHILLY, 187, "status"), (VENUS, 12, "gpu_num"), (OPENB, 15, "num_gpu"),
])
def test_strict_raises_a_one_line_typed_error_naming_file_line_and_field(path, line, field):
    with pytest.raises(WorkloadRowError) as info:
        load_workload(path, strict=True)
    err = info.value
    assert isinstance(err, UserError) and err.exit_code == 2
    assert (err.line, err.field) == (line, field)
    assert str(err).startswith(f"{path}: line {line}: {field}: ") and "\n" not in str(err)


def test_strict_raises_for_a_bad_task_row(tmp_path):
    shutil.copy(PAI.parent / "pai_task_table.csv", tmp_path / "pai_task_table.csv")
    good = [ln for ln in PAI.read_text().splitlines() if ",Exploded," not in ln and ",abc," not in ln
            and ln.count(",") == 5]
    (tmp_path / "pai_job_table.csv").write_text("\n".join(good) + "\n")
    with pytest.raises(WorkloadRowError, match=r"pai_task_table.csv: line 8: plan_gpu: must be a number"):
        load_workload(tmp_path / "pai_job_table.csv", strict=True)


@pytest.mark.parametrize("path, fmt", [
    (CANONICAL, "canonical"), (PHILLY, "philly"), (VENUS, "helios"), (SATURN, "helios"), (PAI, "pai"),
    (OPENB, "alibaba-gpu"), (SHARED / "philly-vc.csv", "canonical"),
])
def test_formats_are_detected(path, fmt):
    if not path.exists():
        pytest.skip(f"{path} is not here")
    assert detect_format(path) == fmt


def test_detection_by_name_when_the_first_line_does_not_say(tmp_path):
    f = tmp_path / "openb_pod_list_gpushare20.csv"
    f.write_text("\n".join(OPENB.read_text().splitlines()[1:]) + "\n")  # saved without its header
    assert detect_format(f) == "alibaba-gpu"
    jobs, report = load_workload(f)
    assert len(jobs) == 10 and report.problems[0].line == 14
    odd = tmp_path / "trace.csv"
    odd.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(WorkloadError) as info:
        load_workload(odd)
    assert "canonical, philly, helios, pai, alibaba-gpu" in str(info.value) and "\n" not in str(info.value)


def test_unknown_format_lists_the_valid_ones():
    with pytest.raises(WorkloadError) as info:
        load_workload(CANONICAL, "phily")
    message = str(info.value)
    assert message == ("unknown workload format 'phily' (did you mean 'philly'?); formats: auto, canonical, "
                       "philly, helios, pai, alibaba-gpu")


def test_missing_and_unreadable_files_are_one_line_errors(tmp_path):
    with pytest.raises(WorkloadError, match=r"nope.csv: no such file$"):
        load_workload(tmp_path / "nope.csv")
    with pytest.raises(WorkloadError, match="is a directory"):
        load_workload(tmp_path)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(WorkloadError, match="empty"):
        load_workload(empty)
    with pytest.raises(WorkloadError, match="empty"):
        load_workload(empty, "canonical")
    broken = tmp_path / "w.csv.gz"
    broken.write_bytes(b"not gzip at all")
    with pytest.raises(WorkloadError, match="gzip"):
        load_workload(broken, "canonical")


def test_a_bad_header_is_an_error_even_when_lenient(tmp_path):
    f = tmp_path / "w.csv"
    f.write_text("job_id,submit_time_s,gpu,duration_s,queue\na,0,1,60,research\n")
    with pytest.raises(WorkloadRowError, match=r"line 1: header: missing column\(s\) gpus"):
        load_workload(f, "canonical")


def test_undecodable_bytes_are_a_bad_row_not_a_crash(tmp_path):
    f = tmp_path / "w.csv"
    f.write_bytes(b"job_id,submit_time_s,gpus,duration_s,queue\nj\xff1,0,1,60,research\nj2,0,1,60,research\n")
    jobs, report = load_workload(f)
    assert [j.job_id for j in jobs] == ["j2"] and lines_of(report) == [(2, "job_id")]


# ---- queue and job names ----


def test_queue_names_are_dns_labels_that_never_merge_two_queues():
    names = queue_names(["Research", "research", "ML Platform", "x" * 80, "研究", "vc_a"])
    assert names["research"] == "research" and names["Research"].startswith("research-")
    assert names["ML Platform"] == "ml-platform" and names["vc_a"] == "vc-a"
    assert len(set(names.values())) == 6
    assert all(DNS_LABEL.match(v) and len(v) <= 40 for v in names.values())


def test_job_names_are_unique_dns_labels():
    ids = ["application_1506638472019_10238", "Job_1", "job-1", "job-1", "x" * 100, "___", ""]
    names = job_names(ids)
    assert names[0] == "application-1506638472019-10238"
    assert len(set(names)) == len(ids)
    assert all(DNS_LABEL.match(n) and len(n) <= MAX_JOB_NAME for n in names)


# ---- replay ----


def test_to_arrivals_makes_valid_specs_with_gangs_for_big_jobs():
    jobs, _ = load_workload(CANONICAL)
    replay = to_arrivals(jobs, image="registry.example.com/train:2")
    specs = {a.job_id: a.spec for a in replay.arrivals}
    assert all(isinstance(s, JobSpec) and s.image == "registry.example.com/train:2" for s in specs.values())
    assert (specs["c002"].gpus, specs["c002"].nodes) == (4, 1)
    assert (specs["c003"].gpus, specs["c003"].nodes) == (8, 1)
    assert (specs["c004"].gpus, specs["c004"].nodes) == (8, 2)
    assert (specs["c012"].gpus, specs["c012"].nodes) == (8, 3)
    assert specs["c004"].queue == "platform-team"
    assert [a.at_s for a in replay.arrivals] == [0.0, 12.5, 30.0, 45.0, 130.0]
    # 40,000,000 s is past the 366-day limit of a spec
    assert replay.clamped == 1 and specs["c012"].estimated_runtime_s == MAX_RUNTIME_S
    assert replay.true_runtime_s["c012"] == MAX_RUNTIME_S
    assert replay.true_runtime_s["c001"] == specs["c001"].estimated_runtime_s == 3600.0
    assert replay.trace_ids == {n: n for n in specs}
    assert "1 run times cut" in replay.summary()


def test_to_arrivals_other_node_sizes_and_scales():
    jobs = [TraceJob("a", 0, 12, 100.0, "q"), TraceJob("b", 5, 4, 100.0, "q")]
    replay = to_arrivals(jobs, max_gpus_per_node=4, runtime_scale=0.5, cpu_per_gpu=2, memory_gib_per_gpu=8,
                         queue_map={"q": "research"}, checkpointable=True)
    a, b = (x.spec for x in replay.arrivals)
    assert (a.gpus, a.nodes, a.cpu, a.memory_gib, a.queue, a.checkpointable) == (4, 3, 8.0, 32.0, "research", True)
    assert (b.gpus, b.nodes) == (4, 1)
    assert replay.true_runtime_s == {"a": 50.0, "b": 50.0}


def test_gpu_types_are_dropped_unless_mapped():
    jobs, _ = load_workload(OPENB)
    assert all(a.spec.gpu_types == [] for a in to_arrivals(jobs).arrivals)
    mapped = to_arrivals(jobs, gpu_type_map={"T4": "T4", "V100M16": "V100", "V100M32": "V100", "G2": "A10"})
    types = {r.trace_ids[a.job_id]: a.spec.gpu_types for a, r in ((a, mapped) for a in mapped.arrivals)}
    assert types["openb-pod-0012"] == ["T4"] and types["openb-pod-0033"] == ["V100"]
    assert types["openb-pod-0021"] == []  # P100 is not mapped: the pod could run there, so any type fits
    assert types["openb-pod-0000"] == []


def test_estimate_errors_stay_within_bounds_are_seeded_and_leave_true_runtimes():
    jobs, _ = load_workload(SHARED / "gavel-synth-dev.csv") if (SHARED / "gavel-synth-dev.csv").exists() \
        else load_workload(CANONICAL)
    jobs = jobs[:2000]
    exact = to_arrivals(jobs)
    noisy = to_arrivals(jobs, estimate_error=0.5, seed=3)
    again = to_arrivals(jobs, estimate_error=0.5, seed=3)
    other = to_arrivals(jobs, estimate_error=0.5, seed=4)
    assert [a.spec for a in noisy.arrivals] == [a.spec for a in again.arrivals]
    assert [a.spec for a in noisy.arrivals] != [a.spec for a in other.arrivals]
    assert noisy.true_runtime_s == exact.true_runtime_s
    ratios = [a.spec.estimated_runtime_s / noisy.true_runtime_s[a.job_id] for a in noisy.arrivals
              if noisy.true_runtime_s[a.job_id] < MAX_RUNTIME_S / 2]
    assert all(0.5 - 1e-9 <= r <= 1.5 + 1e-9 for r in ratios)
    assert min(ratios) < 0.6 and max(ratios) > 1.4  # the whole range is used
    assert all(a.spec.estimated_runtime_s == exact.true_runtime_s[a.job_id] for a in exact.arrivals)


@pytest.mark.parametrize("kwargs, match", [
    ({"estimate_error": 1.0}, "estimate error"), ({"runtime_scale": 0}, "runtime scale"),
    ({"max_gpus_per_node": 0}, "GPUs per node"), ({"image": " "}, "image"),
])
def test_bad_replay_options_are_user_errors(kwargs, match):
    with pytest.raises(WorkloadError, match=match):
        to_arrivals([TraceJob("a", 0, 1, 10.0, "q")], **kwargs)


def test_jobs_too_big_for_a_gang_are_left_out_and_named():
    replay = to_arrivals([TraceJob("huge", 0, 8 * 2000, 10.0, "q"), TraceJob("ok", 0, 1, 10.0, "q")])
    assert replay.too_large == ["huge"] and [a.job_id for a in replay.arrivals] == ["ok"]


def test_replayed_jobs_run_for_their_true_time_not_their_estimate(clock, sqlite_url):
    config = make_config()
    jobs = [TraceJob("t1", 0, 4, 1800.0, "research"), TraceJob("t2", 60, 8, 3600.0, "prod")]
    replay = to_arrivals(jobs, estimate_error=0.5, seed=1)
    assert all(a.spec.estimated_runtime_s != replay.true_runtime_s[a.job_id] for a in replay.arrivals)
    providers = build_providers(config, clock, runtime=replay.runtime(config.speed))
    store = Store(sqlite_url)
    run_simulation(config, replay.arrivals, store, clock=clock, providers=providers)
    for job_id, true_s in replay.true_runtime_s.items():
        job = store.job(job_id)
        assert job.state == JobState.SUCCEEDED and job.cluster == "onprem"
        ran = job.finished_at - job.started_at
        assert ran == pytest.approx(true_s / config.speed("A100"), abs=2 * config.loop.interval_s)


# ---- garbage never crashes ----

HEADER = "job_id,submit_time_s,gpus,duration_s,queue,model\n"
GOOD = ["a1,0,1,60,research,bert\n", "a2,10,16,600,prod,\n", "a3,20,8,6000,research,\"LM (batch size 5)\"\n"]
garbage = st.one_of(
    st.text(max_size=60).map(lambda s: s.replace("\n", " ").replace("\r", " ") + "\n"),
    st.lists(st.sampled_from(["", "x", "-1", "0", "1", "nan", "inf", "1e400", "2.5", "\"", "\"a,b\"", "None",
                              "\x00", "é", " 8 ", "research"]), max_size=8).map(lambda cs: ",".join(cs) + "\n"),
    st.binary(max_size=40).map(lambda b: b.decode("latin-1").replace("\n", " ").replace("\r", " ") + "\n"),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.one_of(st.sampled_from(GOOD), garbage), max_size=12), raw=st.booleans())
def test_garbage_lines_never_crash(tmp_path_factory, rows, raw):
    f = tmp_path_factory.mktemp("g") / "w.csv"
    body = HEADER + "".join(rows)
    f.write_bytes(body.encode("latin-1", "replace") if raw else body.encode("utf-8", "surrogatepass"))
    jobs, report = load_workload(f)
    assert report.rows == len(jobs) + report.skipped
    assert all(j.gpus >= 1 and j.duration_s > 0 and j.submit_time_s >= 0 and math.isfinite(j.duration_s)
               for j in jobs)
    assert all(DNS_LABEL.match(j.queue) for j in jobs)
    to_arrivals(jobs)
    try:
        strict_jobs, strict_report = load_workload(f, strict=True)
    except WorkloadRowError as err:
        assert report.problems and (err.line, err.field) == report.problems[0][:2]
        assert "\n" not in str(err)
    else:
        assert report.ok and strict_jobs == jobs


def test_every_format_name_is_accepted():
    assert FORMATS == ("canonical", "philly", "helios", "pai", "alibaba-gpu")
