"""Shared fixtures: stores on SQLite and on the PostgreSQL server at 127.0.0.1:5432, a simulated clock, small configs."""

from __future__ import annotations

import copy
import os
import uuid
from pathlib import Path

import pytest

from spillover.scheduler.clock import SimClock

pytest_plugins = ["prometheus_fixtures"]

PG_ADMIN = os.environ.get("SPILLOVER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")

BASE_CONFIG = {
    "apiVersion": "spillover/v1alpha1",
    "kind": "SpilloverConfig",
    "store": {"url": "sqlite:///unused.db"},
    "loop": {"interval_s": 30, "solver_time_limit_s": 2},
    "queues": [{"name": "research", "team": "ml"}, {"name": "prod", "team": "platform"}],
    "clusters": [
        {"name": "onprem", "kind": "onprem", "provider": "simulated",
         "node_groups": [{"count": 2, "gpus_per_node": 8, "gpu_type": "A100", "cpu_per_node": 96,
                          "memory_gib_per_node": 1024}]},
        {"name": "aws", "kind": "cloud", "provider": "simulated", "cloud": "aws", "region": "us-east-1",
         "pools": [{"name": "p4d", "instance_type": "p4d.24xlarge", "spot": False, "min_nodes": 0,
                    "max_nodes": 4, "provisioning_delay_s": 600}]},
    ],
    "policy": {"allowed_clouds": ["aws", "gcp", "azure"], "max_cloud_gpus": 64,
               "value_of_time_per_gpu_hour": 4.0, "scale_down_idle_s": 600},
}


def make_config(**changes):
    """The small test config with top-level sections replaced or merged (dicts merge, other values replace)."""
    from spillover.scheduler.config import parse_config

    data = copy.deepcopy(BASE_CONFIG)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key].update(value)
        else:
            data[key] = value
    return parse_config(data, source="test-config")


@pytest.fixture
def clock() -> SimClock:
    return SimClock()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'spillover.db'}"


def _pg_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN, connect_timeout=3):
            return True
    except Exception:
        return False


@pytest.fixture
def pg_url():
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    import psycopg

    if not _pg_available():
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN}; `make services` starts it")
        pytest.skip(f"PostgreSQL is not reachable at {PG_ADMIN}")
    name = f"spillover_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{name}"
    yield url
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'spillover.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def world(clock, sqlite_url):
    """make(**config_changes) -> (config, store, providers, loop) on simulated clusters and the test clock."""
    from spillover.scheduler.loop import ControlLoop
    from spillover.scheduler.store import Store
    from spillover.scheduler.wiring import build_providers

    def make(**config_changes):
        config = make_config(**config_changes)
        store = Store(sqlite_url)
        providers = build_providers(config, clock)
        return config, store, providers, ControlLoop(config, store, providers, clock)
    return make
