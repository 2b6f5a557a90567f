"""Configs for tests that need the bundled example."""

from pathlib import Path

from spillover.scheduler.config import load_config

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "spillover.example.yaml"


def example_config():
    return load_config(EXAMPLE)
