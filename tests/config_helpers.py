"""Configs for tests that need the bundled example."""

from pathlib import Path

from spillover.scheduler.config import load_config

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "spillover.example.yaml"


def example_config():
    return load_config(EXAMPLE)


def fast_loop_config(tmp: Path, *, store_url: str | None = None, queues: list[dict] | None = None,
                     onprem: dict | None = None) -> Path:
    """A config file on simulated clusters (one 8-GPU on-prem node, a cloud pool of up to two) whose loop cycles
    every 0.2 s, for tests that run `spillover run` on jobs of seconds. Waiting is worth a lot, so what does not
    fit on-prem bursts and both clusters are exercised."""
    import yaml

    cfg = {
        "apiVersion": "spillover/v1alpha1", "kind": "SpilloverConfig",
        "store": {"url": store_url or f"sqlite:///{tmp / 'store.db'}"},
        "loop": {"interval_s": 0.2, "solver_time_limit_s": 1},
        "queues": queues or [{"name": "research"}],
        "clusters": [
            {"name": "onprem", "kind": "onprem", "provider": "simulated", **(onprem or {}),
             "node_groups": [{"count": 1, "gpus_per_node": 8, "gpu_type": "A100", "cpu_per_node": 96,
                              "memory_gib_per_node": 1024}]},
            {"name": "aws", "kind": "cloud", "provider": "simulated", "cloud": "aws", "region": "us-east-1",
             "pools": [{"name": "p4d", "instance_type": "p4d.24xlarge", "min_nodes": 0, "max_nodes": 2,
                        "provisioning_delay_s": 0.5}]},
        ],
        "policy": {"value_of_time_per_gpu_hour": 500.0, "scale_down_idle_s": 1, "max_cloud_gpus": 16},
    }
    path = tmp / "spillover.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path
