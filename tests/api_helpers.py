"""The API served for real on 127.0.0.1 (uvicorn in a thread), tokens for it, and job documents to send."""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from pathlib import Path

import httpx
import uvicorn
import yaml

from config_helpers import fast_loop_config

ROOT = Path(__file__).resolve().parents[1]
SPILLOVER = [sys.executable, "-m", "spillover.scheduler.cli"]


class Served:
    """An app under uvicorn on a free port of 127.0.0.1, in a thread; `url` is its base."""

    def __init__(self, app, log_level: str = "warning") -> None:
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level=log_level,
                                                    access_log=False, lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def serve(config, store):
    from spillover.scheduler.api import create_app

    return Served(create_app(config, store))


def token(store, team: str = "ml", role: str = "submitter", name: str = "test") -> str:
    from spillover.scheduler.auth import create_token

    return create_token(store, team=team, role=role, name=name, now=time.time())[1]


def bearer(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


def training_job(name: str = "t", **spec) -> dict:
    body = {"queue": "research", "image": "img:1", "gpus": 1, "estimatedRuntime": "1h"}
    body.update(spec)
    return {"apiVersion": "spillover/v1alpha1", "kind": "TrainingJob", "metadata": {"name": name}, "spec": body}


def batch_job(name: str = "k", queue: str = "research", gpus: int = 2) -> dict:
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "annotations": {"spillover/queue": queue,
                                                        "spillover/estimated-runtime": "2h"}},
            "spec": {"template": {"spec": {"containers": [
                {"name": "train", "image": "img:2", "resources": {"limits": {"nvidia.com/gpu": gpus}}}],
                "restartPolicy": "Never"}}}}


def post_yaml(url: str, tok: str, docs: list[dict], **kw) -> httpx.Response:
    return httpx.post(f"{url}/api/v1/jobs", content=yaml.safe_dump_all(docs),
                      headers={**bearer(tok), "Content-Type": "application/yaml"}, **kw)


def env(**extra: str) -> dict[str, str]:
    e = dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="200")
    e.update(extra)
    return e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def loop_config(tmp: Path, store_url: str) -> Path:
    """A config on simulated clusters whose loop cycles fast and whose jobs take seconds."""
    return fast_loop_config(tmp, store_url=store_url, onprem={"gpu_hour_cost": 1.0},
                            queues=[{"name": "research", "team": "ml"}, {"name": "prod", "team": "platform"}])
