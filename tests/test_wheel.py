"""The wheel as a user installs it: built from the tree, installed into a fresh virtual environment next to PyPI's
`scheduler` package, and run from a folder outside the source tree."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# A different project that owns the import name `scheduler` on PyPI; installed beside Spillover it must keep its
# own files, and Spillover must keep working.
PYPI_SCHEDULER = "scheduler==0.8.11"

pytestmark = pytest.mark.slow


def _run(cmd: list[str], cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "SPILLOVER_CONFIG")}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(the wheel, the bin folder of a fresh venv holding it and PyPI's scheduler)."""
    base = tmp_path_factory.mktemp("wheel")
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(base / "dist"), str(ROOT)], base)
    assert built.returncode == 0, built.stderr[-2000:]
    wheel = next((base / "dist").glob("spillover-*.whl"))
    venv.create(base / "venv", with_pip=True)
    bin_dir = base / "venv" / "bin"
    got = _run([str(bin_dir / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                PYPI_SCHEDULER, str(wheel)], base)
    if got.returncode != 0 and "No matching distribution" in got.stderr + got.stdout:
        pytest.skip(f"PyPI is not reachable for {PYPI_SCHEDULER}: {got.stderr.strip().splitlines()[-1]}")
    assert got.returncode == 0, got.stderr[-2000:]
    return wheel, bin_dir


def test_wheel_installs_under_one_namespace_with_its_data(installed):
    wheel, _ = installed
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.startswith("spillover-")}
    assert top == {"spillover"}, f"the wheel puts files outside spillover/: {sorted(top)}"
    for data in ("spillover/config/spillover.example.yaml", "spillover/config/gpu_instances.csv",
                 "spillover/config/schema.json", "spillover/config/simulate/reference.yaml",
                 "spillover/scheduler/migrations/script.py.mako",
                 "spillover/scheduler/migrations/versions/0001_initial_schema.py"):
        assert data in names, f"{data} is missing from the wheel"


def test_installed_next_to_pypi_scheduler_both_import(installed, tmp_path):
    _, bin_dir = installed
    probe = ("import scheduler, spillover.scheduler.cli as cli, spillover.config as data; "
             "print(scheduler.__file__); print(cli.__file__); print(data.__file__)")
    got = _run([str(bin_dir / "python"), "-c", probe], tmp_path)
    assert got.returncode == 0, got.stderr[-2000:]
    theirs, ours, data = got.stdout.split()
    site = str(bin_dir.parent / "lib")
    assert theirs.startswith(site) and "/spillover/" not in theirs
    assert ours.startswith(site) and "/spillover/scheduler/" in ours, "spillover was imported from the source tree"
    assert data.startswith(site)
    # PyPI's package keeps its own __init__: its files were not merged with ours
    init = Path(theirs).read_text()
    assert "Spillover" not in init


def test_config_validate_and_demo_run_outside_the_tree(installed, tmp_path):
    _, bin_dir = installed
    where = _run([str(bin_dir / "python"), "-c", "from importlib.resources import files; "
                  "print(files('spillover.config') / 'spillover.example.yaml')"], tmp_path)
    example = where.stdout.strip()
    valid = _run([str(bin_dir / "spillover"), "config", "validate", example], tmp_path)
    assert valid.returncode == 0, valid.stdout + valid.stderr
    assert "ok" in valid.stdout and "Traceback" not in valid.stderr

    demo = _run([str(bin_dir / "spillover"), "demo", "--jobs", "24"], tmp_path)
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-2000:]
    assert "24/24 jobs succeeded" in " ".join(demo.stdout.split())
    assert "Every cloud pool is back at its minimum size" in " ".join(demo.stdout.split())
