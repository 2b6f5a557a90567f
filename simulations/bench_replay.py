"""Benchmark: how long a whole replay takes, as a user runs it — `spillover simulate` in a process of its own, start-up,
workload loading and writing results included.

    .venv/bin/python -m spillover.simulations.bench_replay [--workload gavel-synth-dev.csv] [--runs no-wait,spillover-job=32]
        [--repeat 1] [--out simulations/results/replay-speed]

Runs one replay at a time (nothing else of the benchmark shares the machine), and writes results.json and
summary.md: wall and CPU seconds of the command, the loop's cycles and decisions, and the solver's share.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKLOADS = ROOT.parent / "shared" / "data" / "workloads"


def _command(workload: Path, run: str, out: Path) -> list[str]:
    policy, _, value = run.partition("=")
    cmd = [sys.executable, "-m", "spillover.scheduler.cli", "simulate", "-w", str(workload), "-p", policy, "--out", str(out)]
    if value:
        knob = {"spillover": "value_of_time", "spillover-job": "value_of_job_time", "constant-wait": "wait_h",
                "compute-wait": "k"}[policy]
        cmd += ["--sweep", f"{knob}={value}"]
    if policy not in ("spillover", "spillover-job"):
        cmd += ["--queue", "easy"]
    return cmd


def time_one(workload: Path, run: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        done = subprocess.run(_command(workload, run, Path(tmp)), capture_output=True, text=True, cwd=ROOT)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode != 0:
            raise SystemExit(f"{run}: spillover simulate failed: {done.stderr.strip().splitlines()[-1:]}")
        row = json.loads((Path(tmp) / "results.json").read_text())["runs"][0]
    return {"run": run, "wall_s": round(wall, 1),
            "cpu_s": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 1),
            "replay_wall_s": round(row["wall_s"], 1), "jobs": row["jobs"], "cycles": row["cycles"],
            "decisions": row["solves"], "solver_s": round(row["solve_s"], 1),
            "cloud_gpu_hours_measured": round(row["cloud_gpu_hours_measured"]), "jct_avg_h": round(row["jct_avg_h"], 3)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", type=Path, default=WORKLOADS / "gavel-synth-dev.csv")
    ap.add_argument("--runs", default="no-wait,spillover-job=32")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "simulations" / "results" / "replay-speed")
    args = ap.parse_args(argv)
    rows = []
    for run in args.runs.split(","):
        for _ in range(args.repeat):
            rows.append(time_one(args.workload, run))
            print(json.dumps(rows[-1]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"workload": args.workload.name, "runs": rows}, indent=2) + "\n")
    lines = [f"# Whole replays of {args.workload.name} with `spillover simulate`", "",
             "| run | jobs | command wall s | CPU s | of which the replay | cycles | decisions | solver s | "
             "cloud GPU-h (measured) | avg JCT h |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['jobs']:,} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['replay_wall_s']:.1f} | "
                     f"{r['cycles']:,} | {r['decisions']:,} | {r['solver_s']:.1f} | "
                     f"{r['cloud_gpu_hours_measured']:,} | {r['jct_avg_h']:.2f} |")
    (args.out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
