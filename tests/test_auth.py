"""Bearer tokens over a real socket: 401 without a valid one, teams kept apart (another team's job does not exist),
what each role may do, the token commands, and the token string never reaching logs, error bodies or the store."""

from __future__ import annotations

import subprocess
import time

import httpx
import pytest
import yaml
from api_helpers import SPILLOVER, bearer, env, free_port, loop_config, serve, token, training_job
from conftest import make_config

from spillover.scheduler.auth import list_tokens, revoke_token
from spillover.scheduler.store import Store

ROUTES = [("GET", "/api/v1/jobs"), ("POST", "/api/v1/jobs"), ("GET", "/api/v1/jobs/x"),
          ("POST", "/api/v1/jobs/x:cancel"), ("DELETE", "/api/v1/jobs/x"), ("GET", "/api/v1/clusters"),
          ("GET", "/api/v1/cost"), ("GET", "/api/v1/policy")]


@pytest.fixture
def api(store_url):
    config = make_config(store={"url": store_url})
    store = Store(store_url)
    served = serve(config, store)
    yield served.url, store
    served.stop()
    store.close()


def test_every_api_route_needs_a_valid_unrevoked_token(api):
    url, store = api
    good = token(store)
    revoked = token(store, name="old")
    revoke_token(store, next(t.id for t in list_tokens(store) if t.name == "old"), now=time.time())
    for headers in ({}, bearer("spo_not-a-token"), bearer(good + "x"), {"Authorization": f"Basic {good}"},
                    bearer(revoked)):
        for method, path in ROUTES:
            r = httpx.request(method, url + path, headers=headers, json=training_job())
            assert r.status_code == 401, (method, path, headers, r.text)
            assert r.headers["www-authenticate"].startswith("Bearer")
            assert r.headers["content-type"].startswith("application/problem+json")
    assert httpx.get(f"{url}/api/v1/jobs", headers=bearer(good)).status_code == 200
    assert httpx.get(f"{url}/healthz").status_code == 200 and httpx.get(f"{url}/readyz").status_code == 200
    assert store.jobs() == []


def test_a_team_cannot_read_list_or_cancel_another_teams_job_nor_submit_to_its_queue(api):
    url, store = api
    ml, platform = token(store, "ml"), token(store, "platform")
    [theirs] = httpx.post(f"{url}/api/v1/jobs", json=training_job("prod-job", queue="prod"),
                          headers=bearer(platform)).json()["jobs"]
    [mine] = httpx.post(f"{url}/api/v1/jobs", json=training_job("ml-job"), headers=bearer(ml)).json()["jobs"]
    # another team's job is answered exactly as a job that does not exist, by id and by name
    for ref in (theirs["id"], "prod-job"):
        r = httpx.get(f"{url}/api/v1/jobs/{ref}", headers=bearer(ml))
        assert r.status_code == 404 and r.json()["detail"] == f"unknown job '{ref}'; `spillover jobs` lists job ids and names"
        assert httpx.post(f"{url}/api/v1/jobs/{ref}:cancel", headers=bearer(ml)).status_code == 404
        assert httpx.delete(f"{url}/api/v1/jobs/{ref}", headers=bearer(ml)).status_code == 404
    listed = httpx.get(f"{url}/api/v1/jobs", headers=bearer(ml)).json()["items"]
    assert [j["id"] for j in listed] == [mine["id"]]
    assert httpx.get(f"{url}/api/v1/jobs", params={"queue": "prod"}, headers=bearer(ml)).json()["items"] == []
    r = httpx.post(f"{url}/api/v1/jobs", json=[training_job("a"), training_job("b", queue="prod")], headers=bearer(ml))
    assert r.status_code == 403 and "body[1].spec.queue" in r.json()["detail"]
    assert store.job(theirs["id"]).state.value == "pending" and len(store.jobs()) == 2


def test_roles_ops_and_admin_see_all_finance_reads_all_costs_and_submits_nothing(api):
    url, store = api
    ml = token(store, "ml")
    [job] = httpx.post(f"{url}/api/v1/jobs", json=training_job("x"), headers=bearer(ml)).json()["jobs"]
    for role in ("ops", "admin"):
        t = token(store, "platform", role)
        assert [j["id"] for j in httpx.get(f"{url}/api/v1/jobs", headers=bearer(t)).json()["items"]][-1] == job["id"]
        assert httpx.get(f"{url}/api/v1/jobs/{job['id']}", headers=bearer(t)).status_code == 200
        assert httpx.get(f"{url}/api/v1/cost", headers=bearer(t)).json()["scope"] == "all"
        r = httpx.post(f"{url}/api/v1/jobs", json=training_job(f"by-{role}"), headers=bearer(t))
        assert r.status_code == 201  # into another team's queue
        assert httpx.get(f"{url}/api/v1/policy", headers=bearer(t)).status_code == 200
    ops = token(store, "platform", "ops")
    assert httpx.post(f"{url}/api/v1/jobs/{job['id']}:cancel", headers=bearer(ops)).json()["outcome"] == "cancelled"
    fin = token(store, "finance", "finance")
    assert httpx.get(f"{url}/api/v1/cost", params={"by": "team"}, headers=bearer(fin)).json()["scope"] == "all"
    r = httpx.post(f"{url}/api/v1/jobs", json=training_job("f"), headers=bearer(fin))
    assert r.status_code == 403 and r.headers["content-type"].startswith("application/problem+json")
    assert httpx.get(f"{url}/api/v1/policy", headers=bearer(fin)).status_code == 200
    assert httpx.get(f"{url}/api/v1/cost", headers=bearer(ml)).json()["scope"] == "team:ml"
    assert httpx.get(f"{url}/api/v1/policy", headers=bearer(ml)).status_code == 200


def test_token_commands_create_list_revoke_and_the_token_never_leaks(tmp_path):
    db = tmp_path / "store.db"
    cfg = loop_config(tmp_path, f"sqlite:///{db}")

    def cli(*args: str, **kw) -> subprocess.CompletedProcess:
        return subprocess.run([*SPILLOVER, *args], capture_output=True, text=True, env=env(), timeout=60, **kw)

    r = cli("token", "create", "--team", "ml", "--role", "submitter", "--name", "ci-bot", "-c", str(cfg))
    assert r.returncode == 0, r.stderr
    tok = r.stdout.strip()
    assert tok.startswith("spo_") and len(tok) > 40 and "\n" not in tok and tok not in r.stderr
    tid = r.stderr.split()[2]
    bad = cli("token", "create", "--team", "nobody", "--role", "submitter", "--name", "x", "-c", str(cfg))
    assert bad.returncode == 2 and bad.stderr.startswith("error: --team: unknown team 'nobody'")
    listed = cli("token", "list", "-c", str(cfg))
    assert tid in listed.stdout and "ci-bot" in listed.stdout and tok not in listed.stdout

    port = free_port()
    server = subprocess.Popen([*SPILLOVER, "serve", "-c", str(cfg), "--port", str(port), "--log-level", "debug"],
                              env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    bodies = []
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/healthz")
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and server.poll() is None
                time.sleep(0.1)
        ok = httpx.post(f"{url}/api/v1/jobs", json=training_job("a"), headers=bearer(tok))
        assert ok.status_code == 201
        for r in (httpx.get(f"{url}/api/v1/jobs", headers=bearer(tok)),
                  httpx.get(f"{url}/api/v1/jobs/nope", headers=bearer(tok)),
                  httpx.post(f"{url}/api/v1/jobs", json=training_job(gpus=0), headers=bearer(tok)),
                  httpx.post(f"{url}/api/v1/jobs", json=training_job("b", queue="prod"), headers=bearer(tok)),
                  httpx.get(f"{url}/api/v1/jobs", headers=bearer(tok + "x")),
                  httpx.get(f"{url}/api/v1/jobs", headers=bearer(tok[:-1]))):
            bodies.append(r.text + str(r.headers))
        assert [b for b in bodies if tok[4:20] in b] == []
        assert cli("token", "revoke", tid, "-c", str(cfg)).returncode == 0
        r = httpx.get(f"{url}/api/v1/jobs", headers=bearer(tok))
        assert r.status_code == 401 and tok[4:20] not in r.text
        again = cli("token", "revoke", "nope", "-c", str(cfg))
        assert again.returncode == 2 and "unknown token id 'nope'" in again.stderr
    finally:
        server.terminate()
        log, _ = server.communicate(timeout=30)
    assert "GET /api/v1/jobs" in log and "submitted 1 job(s)" in log  # the logs are there, at debug level
    assert tok[4:20] not in log and tok not in log
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("store.db*"))
    assert tok.encode() not in stored and tok[4:20].encode() not in stored
    import hashlib

    assert hashlib.sha256(tok.encode()).hexdigest().encode() in stored  # what is kept instead
    assert "spo_" not in yaml.safe_dump(cli("token", "list", "-c", str(cfg)).stdout)
