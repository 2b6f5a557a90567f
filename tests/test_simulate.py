"""`spillover simulate` end to end: each workload format replays through the real loop under Spillover and the
baselines, results and the Pareto plot are written, runs are deterministic, and bad options are one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from spillover.scheduler.cli import REFERENCE_CONFIG
from spillover.scheduler.config import load_config
from spillover.simulations.simulate import RunSpec, run_one
from spillover.simulations.workloads import load_workload, to_arrivals

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "workloads"
TRACES = ROOT / "tests" / "data" / "traces"


def spillover(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "spillover.scheduler.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def gavel() -> Path:
    path = SHARED / "gavel-synth-dev.csv"
    if not path.exists():
        pytest.skip(f"{path} is not on this machine")
    return path


def test_simulate_writes_results_and_a_pareto_plot_for_each_policy(tmp_path):
    r = spillover("simulate", "-w", str(gavel()), "--limit", "60", "--policy", "spillover,no-wait,constant-wait",
                  "--sweep", "wait_h=0.5,4", "--sweep", "value_of_time=2,8", "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    runs = {(x["policy"], x["setting"]) for x in data["runs"]}
    # each Constant-Wait replay also yields its hindsight booking (cloud jobs started at submission)
    assert runs == {("spillover", "value_of_time=2"), ("spillover", "value_of_time=8"), ("no-wait", ""),
                    ("constant-wait", "wait_h=0.5"), ("constant-wait", "wait_h=4"),
                    ("constant-wait-hindsight", "wait_h=0.5"), ("constant-wait-hindsight", "wait_h=4")}
    for x in data["runs"]:
        assert x["jobs"] == 60 and x["unfinished"] == 0 and x["measured"] == 48
        assert x["jct_avg_h"] > 0 and x["jct_p99_h"] >= x["jct_p90_h"] >= x["jct_p50_h"]
    by = {(x["policy"], x["setting"]): x for x in data["runs"]}
    # waiting longer before bursting never sends more to the cloud here, and never finishes sooner
    assert by[("constant-wait", "wait_h=4")]["cloud_gpu_hours"] <= by[("no-wait", "")]["cloud_gpu_hours"]
    assert by[("constant-wait", "wait_h=4")]["jct_avg_h"] >= by[("no-wait", "")]["jct_avg_h"]
    hind, plain = by[("constant-wait-hindsight", "wait_h=4")], by[("constant-wait", "wait_h=4")]
    assert hind["cloud_gpu_hours_measured"] == plain["cloud_gpu_hours_measured"]
    assert hind["wait_avg_h"] <= plain["wait_avg_h"] and hind["jct_avg_h"] <= plain["jct_avg_h"]
    header = (tmp_path / "out" / "results.csv").read_text().splitlines()[0].split(",")
    assert {"policy", "setting", "cloud_gpu_hours", "cloud_usd", "jct_avg_h", "wait_p90_h"} <= set(header)
    png = (tmp_path / "out" / "pareto.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


@pytest.mark.parametrize("trace", ["canonical.csv", "philly/cluster_job_log", "helios/Venus/cluster_log.csv",
                                   "pai/pai_job_table.csv", "openb_pod_list_default.csv"])
def test_every_trace_format_replays(tmp_path, trace):
    path = TRACES / trace
    r = spillover("simulate", "-w", str(path), "--policy", "spillover,no-wait", "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    assert "skipped" in r.stderr or "jobs" in r.stderr  # the load report
    runs = json.loads((tmp_path / "out" / "results.json").read_text())["runs"]
    assert [x["policy"] for x in runs] == ["spillover", "no-wait"] and all(x["unfinished"] == 0 for x in runs)


def test_a_replay_is_deterministic_under_its_seed():
    jobs, _ = load_workload(gavel())
    config = load_config(REFERENCE_CONFIG)

    def once():
        replay = to_arrivals(jobs[:80], estimate_error=0.5, seed=3)
        m = run_one(config, replay, RunSpec("spillover", 4.0), estimates_exact=False)
        return (m.cloud_gpu_hours, m.jct_avg_h, m.wait_p90_h, m.cloud_usd)

    assert once() == once()


@pytest.mark.parametrize("args, message", [
    (["--policy", "always-burst"], "--policy: unknown policy 'always-burst'; valid: spillover, spillover-job, no-wait"),
    (["--sweep", "T=1,2"], "--sweep: expected KNOB=v1,v2,... with KNOB one of k, value_of_job_time, value_of_time, wait_h"),
    (["--sweep", "k=a,b"], "--sweep k: values must be numbers"),
    (["--queue", "lifo"], "--queue: unknown discipline 'lifo'; valid: fifo, easy"),
])
def test_bad_options_are_one_line_and_exit_2(tmp_path, args, message):
    r = spillover("simulate", "-w", str(gavel()), "--out", str(tmp_path / "out"), *args)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith(f"error: {message}"), r.stderr
    assert "Traceback" not in r.stderr


def test_a_workload_that_does_not_exist_is_one_line(tmp_path):
    r = spillover("simulate", "-w", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "out"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "nope.csv" in r.stderr.strip().splitlines()[-1]


def _teams_config(tmp_path: Path, budget: dict | None) -> Path:
    import yaml

    data = yaml.safe_load(Path(REFERENCE_CONFIG).read_text())
    data["prices"]["catalog"] = str(Path(REFERENCE_CONFIG).parent / data["prices"]["catalog"])
    data["queues"] = [{"name": "research", "team": "ml"}, {"name": "interns", "team": "ml"},
                      {"name": "prod", "team": "platform"}]
    data["teams"] = [{"name": "ml", **({"budget": budget} if budget else {})}, {"name": "platform"}]
    path = tmp_path / ("budget.yaml" if budget else "free.yaml")
    path.write_text(yaml.safe_dump(data))
    return path


def test_simulate_replays_a_proposed_team_budget_and_reports_it_per_team_and_period(tmp_path):
    import csv

    budget = {"usd": 300, "period": "week", "count_onprem": False}
    runs = {}
    for name, cfg in (("free", _teams_config(tmp_path, None)), ("budget", _teams_config(tmp_path, budget))):
        r = spillover("simulate", "-w", str(gavel()), "-c", str(cfg), "--limit", "300", "-p", "spillover",
                      "--out", str(tmp_path / name))
        assert r.returncode == 0, r.stderr
        assert "teams under spillover" in r.stdout
        runs[name] = {row["team"]: row for row in csv.DictReader((tmp_path / name / "teams.csv").open())}
    free, held = runs["free"], runs["budget"]
    assert set(free) == set(held) == {"ml", "platform"}
    assert float(free["ml"]["cloud_usd"]) > 2 * 300  # unconstrained, ml spends well over the budget's pace
    assert float(held["ml"]["cloud_usd"]) < float(free["ml"]["cloud_usd"])
    assert float(held["ml"]["wait_avg_h"]) > float(free["ml"]["wait_avg_h"])  # and its jobs wait for it
    (line,) = list(csv.DictReader((tmp_path / "budget" / "budgets.csv").open()))
    assert line["budget"] == "team:ml" and int(line["periods"]) >= 2
    assert line["held"] == "True" and float(line["worst_usd"]) <= 300
    assert not (tmp_path / "free" / "budgets.csv").exists() or not list(
        csv.DictReader((tmp_path / "free" / "budgets.csv").open()))
