"""Kill `spillover run` with SIGKILL mid-act — at exact points and at random moments — restart it, and check
that every job ran exactly once and none was lost."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from config_helpers import fast_loop_config
from spillover.scheduler.model import JobState
from spillover.scheduler.store import Store

SPILLOVER = [sys.executable, "-m", "spillover.scheduler.cli"]
N_JOBS = 12


def _config(tmp: Path) -> Path:
    return fast_loop_config(tmp)


def _jobs_file(tmp: Path) -> Path:
    docs = []
    for i in range(N_JOBS):
        docs.append({"apiVersion": "spillover/v1alpha1", "kind": "TrainingJob", "metadata": {"name": f"job-{i:02d}"},
                     "spec": {"queue": "research", "image": "img:1", "gpus": [2, 4, 8][i % 3],
                              "estimatedRuntime": f"{1 + i % 3}s"}})
    path = tmp / "jobs.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    return path


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    env.update(extra)
    return env


def _run(cfg: Path, tmp: Path, **env: str) -> subprocess.Popen:
    return subprocess.Popen([*SPILLOVER, "run", "-c", str(cfg), "--state-dir", str(tmp / "sim")], env=_env(**env),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp)


def _created(tmp: Path) -> list[str]:
    out = []
    for f in (tmp / "sim").glob("*.json"):
        out.extend(json.loads(f.read_text())["created"])
    return out


def _wait_all_done(store: Store, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(j.state.terminal for j in store.jobs()):
            return
        time.sleep(0.3)


@pytest.mark.parametrize("chaos", ["exact-points", "random-kills"])
def test_sigkill_mid_act_loses_nothing_and_runs_nothing_twice(tmp_path, chaos):
    cfg = _config(tmp_path)
    subprocess.run([*SPILLOVER, "submit", str(_jobs_file(tmp_path)), "-c", str(cfg)], env=_env(), check=True,
                   capture_output=True)
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    assert len(store.jobs()) == N_JOBS
    kills = 0
    if chaos == "exact-points":
        # the process kills itself right after writing intents, then right after a dispatch call returned
        for point in ("after-intent:1", "after-dispatch:1", "after-intent:2", "after-dispatch:3"):
            p = _run(cfg, tmp_path, SPILLOVER_CRASH_AT=point)
            rc = p.wait(timeout=60)
            assert rc == -signal.SIGKILL, p.stderr.read().decode()[-2000:]
            kills += 1
    else:
        rng = random.Random(11)
        for _ in range(8):
            p = _run(cfg, tmp_path)
            time.sleep(rng.uniform(1.0, 2.5))  # start-up takes about a second; the kill lands mid-cycle
            p.send_signal(signal.SIGKILL)
            p.wait(timeout=30)
            kills += 1
    final = _run(cfg, tmp_path)
    try:
        _wait_all_done(store)
    finally:
        final.terminate()
        final.wait(timeout=30)
    jobs = store.jobs()
    assert kills >= 4
    assert {j.state for j in jobs} == {JobState.SUCCEEDED}, [(j.id, j.state) for j in jobs]
    created = _created(tmp_path)
    assert sorted(created) == sorted(j.id for j in jobs), "a job was created twice or never"
    assert store.open_actions() == []
