"""Schemathesis against the served OpenAPI spec over a real socket, with an admin token: thousands of generated
requests on every operation, and not one answer is a 5xx."""

from __future__ import annotations

import collections
import subprocess
import sys
from pathlib import Path

from api_helpers import Served, env, token
from conftest import make_config

from spillover.scheduler.api import create_app
from spillover.scheduler.store import Store

ST = Path(sys.executable).with_name("st")


class Counted:
    """The app as it is, with each answer's status counted on the way out (what the server really sent)."""

    def __init__(self, app) -> None:
        self.app = app
        self.statuses: collections.Counter[int] = collections.Counter()
        self.paths: collections.Counter[str] = collections.Counter()

    async def __call__(self, scope, receive, send):
        async def counting(message):
            if message["type"] == "http.response.start":
                self.statuses[message["status"]] += 1
                self.paths[f"{scope['method']} {scope['path'].split('/')[3] if scope['path'].startswith('/api/v1/') else scope['path']}"] += 1
            await send(message)

        await self.app(scope, receive, counting)


def test_generated_requests_never_get_a_server_error(tmp_path):
    url_db = f"sqlite:///{tmp_path / 'fuzz.db'}"
    store = Store(url_db)
    counted = Counted(create_app(make_config(store={"url": url_db}), store))
    served = Served(counted, log_level="critical")
    admin = token(store, "platform", "admin")
    try:
        r = subprocess.run(
            [str(ST), "run", f"{served.url}/openapi.json", "-H", f"Authorization: Bearer {admin}",
             "--checks", "not_a_server_error", "--max-examples", "165", "--seed", "7", "--workers", "2",
             "--continue-on-failure", "--request-timeout", "10", "--suppress-health-check", "all"],
            capture_output=True, text=True, env=env(), timeout=240, cwd=tmp_path)
    finally:
        served.stop()
    total = sum(counted.statuses.values())
    server_errors = {s: n for s, n in counted.statuses.items() if s >= 500}
    report = f"{total} requests {dict(counted.statuses)} by operation {dict(counted.paths)}\n{r.stdout[-3000:]}"
    print(f"schemathesis: {total} requests, statuses {dict(sorted(counted.statuses.items()))}")
    assert server_errors == {}, report
    assert total >= 2000, report
    assert r.returncode == 0, report
    # every operation was exercised, not only the cheap ones
    assert all(counted.paths[op] > 10 for op in ("POST jobs", "GET jobs", "DELETE jobs", "GET cost")), report
