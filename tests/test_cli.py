"""The `spillover` command as a user runs it: one-line errors with exit code 2 and nothing stored, the job
commands, cost reports in three formats, config validation, and the demo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from spillover.scheduler.model import JobState
from spillover.scheduler.store import Store

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "config" / "spillover.example.yaml"


def spillover(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    e = dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="200")
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "spillover.scheduler.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env=e, timeout=300)


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    data = yaml.safe_load(EXAMPLE.read_text())
    data["store"]["url"] = f"sqlite:///{tmp_path / 'store.db'}"
    path = tmp_path / "spillover.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def stored_jobs(tmp_path: Path) -> int:
    db = tmp_path / "store.db"
    return len(Store(f"sqlite:///{db}").jobs()) if db.exists() else 0


def job_yaml(**spec) -> str:
    base = {"queue": "research", "image": "img:1", "gpus": 1, "estimatedRuntime": "1h"}
    base.update(spec)
    return yaml.safe_dump({"apiVersion": "spillover/v1alpha1", "kind": "TrainingJob",
                           "metadata": {"name": "t"}, "spec": base})


@pytest.mark.parametrize("spec, field", [
    ({"gpus": 0}, "spec.gpus"),
    ({"estimatedRuntime": "soon"}, "spec.estimatedRuntime"),
    ({"gpuTypes": ["TPU"]}, "spec.gpuTypes"),
    ({"queue": "nope"}, "spec.queue"),
    ({"gpus": 16}, "spec.gpus"),
    ({"colour": "blue"}, "spec.colour"),
])
def test_a_malformed_job_is_one_line_exit_2_and_nothing_stored(tmp_path, cfg, spec, field):
    f = tmp_path / "job.yaml"
    f.write_text(job_yaml(**spec))
    r = spillover("submit", str(f), "-c", str(cfg))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and field in lines[0] and "Traceback" not in r.stderr, r.stderr
    assert r.stdout == ""
    assert stored_jobs(tmp_path) == 0


def test_a_file_with_one_bad_document_stores_none_of_them(tmp_path, cfg):
    f = tmp_path / "jobs.yaml"
    f.write_text(job_yaml() + "---\n" + job_yaml(gpus=-1))
    r = spillover("submit", str(f), "-c", str(cfg))
    assert r.returncode == 2 and "spec.gpus" in r.stderr
    assert stored_jobs(tmp_path) == 0


def test_submit_list_describe_and_cancel(tmp_path, cfg):
    for example in sorted((ROOT / "config" / "examples").glob("*.yaml")):
        r = spillover("submit", str(example), "-c", str(cfg))
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith("submitted ")
    r = spillover("jobs", "-c", str(cfg))
    assert r.returncode == 0 and "bert-finetune" in r.stdout and "pending" in r.stdout
    r = spillover("describe", "bert-finetune", "-c", str(cfg))
    assert r.returncode == 0 and "submitted to queue research" in r.stdout and "gpuTypes" in r.stdout
    r = spillover("cancel", "bert-finetune", "-c", str(cfg))
    assert r.returncode == 0 and "cancelled" in r.stdout
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    assert store.job("bert-finetune").state == JobState.CANCELLED
    r = spillover("cancel", "bert-finetune", "-c", str(cfg))
    assert r.returncode == 2 and "is cancelled" in r.stderr
    r = spillover("describe", "no-such-job", "-c", str(cfg))
    assert r.returncode == 2 and r.stderr.strip() == \
        "error: unknown job 'no-such-job'; `spillover jobs` lists job ids and names"


def test_commands_without_a_config_say_how_to_give_one(tmp_path):
    r = spillover("jobs", cwd=tmp_path, env={"SPILLOVER_CONFIG": ""})
    assert r.returncode == 2 and "no config: pass --config FILE" in r.stderr


def test_config_validate_reports_every_error_with_its_path(tmp_path):
    data = yaml.safe_load(EXAMPLE.read_text())
    data["clusters"][0]["node_groups"][0]["count"] = -1
    data["policy"]["allowed_clouds"] = ["aws", "ibm"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    r = spillover("config", "validate", str(bad))
    assert r.returncode == 2
    assert "clusters[0].node_groups[0].count" in r.stderr and "policy.allowed_clouds[1]" in r.stderr
    ok = spillover("config", "validate", str(EXAMPLE))
    assert ok.returncode == 0 and "ok" in ok.stdout


def test_demo_bursts_reports_cost_per_cloud_and_leaves_pools_at_minimum(tmp_path):
    r = spillover("demo", "--jobs", "60", "--keep", str(tmp_path / "demo.db"))
    assert r.returncode == 0, r.stderr
    assert "burst to" in r.stdout and "Cost by cloud" in r.stdout
    assert "60/60 jobs succeeded" in r.stdout
    assert "Every cloud pool is back at its minimum size." in r.stdout
    kept = tmp_path / "demo.yaml"
    report = spillover("cost-report", "-c", str(kept), "--by", "cloud", "--format", "json")
    rows = json.loads(report.stdout)
    clouds = {row["cloud"] for row in rows}
    assert "onprem" in clouds and clouds & {"aws", "gcp", "azure"}
    csv_out = spillover("cost-report", "-c", str(kept), "--by", "queue", "--format", "csv").stdout
    assert csv_out.splitlines()[0] == "queue,node_hours,gpu_hours,usd"
