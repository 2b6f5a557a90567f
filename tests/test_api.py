"""The HTTP API over a real socket: submit in both job formats, YAML and JSON; list, get, cancel; clusters, cost,
policy, health; problem+json for bad input with nothing stored; bounded bodies; a job's whole life through the SDK
and through the CLI with --server."""

from __future__ import annotations

import json
import subprocess
import threading
import time

import httpx
import pytest
import yaml
from api_helpers import (SPILLOVER, bearer, batch_job, env, loop_config, post_yaml, serve, token,
                         training_job)
from conftest import make_config

from spillover.scheduler.model import JobState
from spillover.scheduler.store import Store

PROBLEM = "application/problem+json"


@pytest.fixture
def api(store_url):
    """(base url, config, store, a token of team ml) with the API served on `store_url`."""
    config = make_config(store={"url": store_url})
    store = Store(store_url)
    served = serve(config, store)
    yield served.url, config, store, token(store, "ml", "submitter")
    served.stop()
    store.close()


def jobs_stored(store) -> int:
    return len(store.jobs())


def assert_problem(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM), r.headers
    body = r.json()
    assert body["status"] == status and body["title"] and "type" in body and body["detail"]
    return body


# ---- submit -----------------------------------------------------------------------------------------


def test_submit_both_formats_as_json_and_yaml(api):
    url, _, store, tok = api
    r = httpx.post(f"{url}/api/v1/jobs", json=training_job("one"), headers=bearer(tok))
    assert r.status_code == 201, r.text
    [job] = r.json()["jobs"]
    assert job["name"] == "one" and job["state"] == "pending" and job["team"] == "ml" and job["gpus"] == 1
    r = httpx.post(f"{url}/api/v1/jobs", json=[training_job("two", gpus=4), batch_job("three", gpus=2)],
                   headers=bearer(tok))
    assert r.status_code == 201 and [j["name"] for j in r.json()["jobs"]] == ["two", "three"]
    r = post_yaml(url, tok, [batch_job("four"), training_job("five", nodes=2, gpus=8)])
    assert r.status_code == 201, r.text
    assert {j["name"]: j["gpus"] for j in r.json()["jobs"]} == {"four": 2, "five": 16}
    # a YAML list in one document, with text/yaml
    r = httpx.post(f"{url}/api/v1/jobs", content=yaml.safe_dump([training_job("six")]),
                   headers={**bearer(tok), "Content-Type": "text/yaml; charset=utf-8"})
    assert r.status_code == 201, r.text
    assert sorted(j.name for j in store.jobs()) == ["five", "four", "one", "six", "three", "two"]
    three = store.job("three")
    assert three.spec.image == "img:2" and three.spec.estimated_runtime_s == 7200


@pytest.mark.parametrize("send, field", [
    (lambda u, t: httpx.post(u, json=training_job(gpus=0), headers=bearer(t)), "spec.gpus"),
    (lambda u, t: httpx.post(u, json=[training_job("a"), training_job("b"), training_job("c", queue="nope")],
                             headers=bearer(t)), "body[2].spec.queue"),
    (lambda u, t: httpx.post(u, json=[training_job("a"), training_job("a")], headers=bearer(t)),
     "body[1].metadata.name"),
    (lambda u, t: httpx.post(u, json=training_job(colour="blue"), headers=bearer(t)), "spec.colour"),
    (lambda u, t: httpx.post(u, json=training_job(gpus=16), headers=bearer(t)), "spec.gpus"),
    (lambda u, t: httpx.post(u, json=training_job(gpuTypes=["TPU"]), headers=bearer(t)), "spec.gpuTypes"),
    (lambda u, t: httpx.post(u, json={**batch_job(), "metadata": {"name": "k"}}, headers=bearer(t)),
     "metadata.annotations.spillover/queue"),
    (lambda u, t: httpx.post(u, json=[], headers=bearer(t)), "body"),
    (lambda u, t: httpx.post(u, json=[1, 2], headers=bearer(t)), "body[0]"),
    (lambda u, t: httpx.post(u, content=b"{not json", headers={**bearer(t), "Content-Type": "application/json"}),
     "body"),
    (lambda u, t: httpx.post(u, content=b"a: [1\n", headers={**bearer(t), "Content-Type": "application/yaml"}),
     "body"),
    (lambda u, t: httpx.post(u, content=b"\xff\xfe", headers={**bearer(t), "Content-Type": "application/yaml"}),
     "body"),
])
def test_bad_input_is_a_422_problem_naming_the_field_and_stores_nothing(api, send, field):
    url, _, store, tok = api
    r = send(f"{url}/api/v1/jobs", tok)
    body = assert_problem(r, 422)
    fields = [e["field"] for e in body["errors"]]
    assert field in fields, body
    assert jobs_stored(store) == 0


def test_a_body_that_is_not_json_or_yaml_is_415_and_bad_queries_are_problems(api):
    url, _, store, tok = api
    r = httpx.post(f"{url}/api/v1/jobs", data={"a": "b"}, headers=bearer(tok))
    assert "Content-Type" in assert_problem(r, 415)["detail"]
    body = assert_problem(httpx.get(f"{url}/api/v1/jobs", params={"limit": 0}, headers=bearer(tok)), 422)
    assert [e["field"] for e in body["errors"]] == ["query.limit"]
    body = assert_problem(httpx.get(f"{url}/api/v1/jobs", params={"state": "sleeping"}, headers=bearer(tok)), 422)
    assert body["errors"][0]["field"].startswith("query.state")
    body = assert_problem(httpx.get(f"{url}/api/v1/jobs", params={"continue": "@@"}, headers=bearer(tok)), 400)
    assert body["errors"][0]["field"] == "query.continue"
    assert_problem(httpx.get(f"{url}/api/v1/cost", params={"by": "planet"}, headers=bearer(tok)), 422)
    assert_problem(httpx.get(f"{url}/api/v1/nothing-here", headers=bearer(tok)), 404)
    assert_problem(httpx.put(f"{url}/api/v1/jobs", headers=bearer(tok)), 405)
    assert jobs_stored(store) == 0


def test_an_oversized_body_is_413_by_its_length_or_while_chunked_and_nothing_is_stored(tmp_path):
    from spillover.scheduler.api import create_app
    from api_helpers import Served

    url_db = f"sqlite:///{tmp_path / 's.db'}"
    config = make_config(store={"url": url_db}, api={"max_body_bytes": 4096, "max_jobs_per_request": 3})
    store = Store(url_db)
    served = Served(create_app(config, store))
    tok = token(store)
    try:
        big = json.dumps([training_job(f"j{i}", env={"PAD": "x" * 100}) for i in range(40)]).encode()
        assert len(big) > 4096
        r = httpx.post(f"{served.url}/api/v1/jobs", content=big,
                       headers={**bearer(tok), "Content-Type": "application/json"})
        assert "4,096 bytes" in assert_problem(r, 413)["detail"]

        def chunks():  # no Content-Length: Transfer-Encoding: chunked, and more than the limit
            for _ in range(100):
                yield b" " * 1000

        r = httpx.post(f"{served.url}/api/v1/jobs", content=chunks(),
                       headers={**bearer(tok), "Content-Type": "application/json"})
        assert_problem(r, 413)
        r = httpx.post(f"{served.url}/api/v1/jobs", json=[training_job(f"j{i}") for i in range(4)],
                       headers=bearer(tok))
        assert "limit of 3 per request" in assert_problem(r, 413)["detail"]
        assert jobs_stored(store) == 0
        # the server is fine afterwards, and a body within the limit passes
        r = httpx.post(f"{served.url}/api/v1/jobs", json=[training_job(f"j{i}") for i in range(3)],
                       headers=bearer(tok))
        assert r.status_code == 201 and jobs_stored(store) == 3
    finally:
        served.stop()


def test_concurrent_submits_each_get_their_own_jobs(api):
    url, _, store, tok = api
    answers: dict[int, list[str]] = {}

    def send(i: int) -> None:
        with httpx.Client(headers=bearer(tok)) as http:
            for k in range(5):
                r = http.post(f"{url}/api/v1/jobs", json=[training_job(f"c{i}-{k}-{n}") for n in range(1 + i % 3)])
                assert r.status_code == 201, r.text
                answers.setdefault(i, []).extend(j["name"] for j in r.json()["jobs"])

    threads = [threading.Thread(target=send, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(8):  # what each request got back is what it sent, though requests share transactions
        assert answers[i] == [f"c{i}-{k}-{n}" for k in range(5) for n in range(1 + i % 3)]
    assert sorted(j.name for j in store.jobs()) == sorted(n for names in answers.values() for n in names)


# ---- list, get, cancel ------------------------------------------------------------------------------


def test_list_filters_and_pages_newest_first_stable_while_jobs_arrive(api):
    url, config, store, tok = api
    ops = token(store, "platform", "ops")
    for i in range(12):
        r = httpx.post(f"{url}/api/v1/jobs", json=[training_job(f"r{i}-{k}") for k in range(2)], headers=bearer(ops))
        assert r.status_code == 201
    httpx.post(f"{url}/api/v1/jobs", json=[training_job(f"p{i}", queue="prod") for i in range(5)], headers=bearer(ops))
    expected = [j.id for j in sorted(store.jobs(), key=lambda j: (j.submitted_at, j.id), reverse=True)]
    seen, cont, pages = [], None, 0
    while True:
        params = {"limit": 7, **({"continue": cont} if cont else {})}
        page = httpx.get(f"{url}/api/v1/jobs", params=params, headers=bearer(ops)).json()
        seen += [j["id"] for j in page["items"]]
        pages += 1
        # a job submitted mid-listing is newer than the cursor: it never shifts or repeats a page
        httpx.post(f"{url}/api/v1/jobs", json=training_job(f"late{pages}"), headers=bearer(ops))
        cont = page["continue"]
        if not cont:
            break
    assert seen == expected and pages == 5
    page = httpx.get(f"{url}/api/v1/jobs", params={"queue": "prod", "limit": 1000}, headers=bearer(ops)).json()
    assert len(page["items"]) == 5 and page["continue"] is None
    page = httpx.get(f"{url}/api/v1/jobs", params={"team": "platform"}, headers=bearer(ops)).json()
    assert {j["queue"] for j in page["items"]} == {"prod"}
    store.transition(store.job("r0-0").id, [JobState.PENDING], JobState.CANCELLED, now=time.time(), message="x")
    page = httpx.get(f"{url}/api/v1/jobs", params=[("state", "cancelled"), ("state", "failed")],
                     headers=bearer(ops)).json()
    assert [j["name"] for j in page["items"]] == ["r0-0"]
    # the submitter of team ml sees only its team's jobs, whatever it asks for
    page = httpx.get(f"{url}/api/v1/jobs", params={"limit": 1000}, headers=bearer(tok)).json()
    assert page["items"] and {j["team"] for j in page["items"]} == {"ml"}
    page = httpx.get(f"{url}/api/v1/jobs", params={"team": "platform"}, headers=bearer(tok)).json()
    assert page["items"] == []


def test_get_a_job_with_its_events_and_cancel_it(api):
    url, _, store, tok = api
    [job] = httpx.post(f"{url}/api/v1/jobs", json=training_job("bert"), headers=bearer(tok)).json()["jobs"]
    for ref in (job["id"], "bert"):
        d = httpx.get(f"{url}/api/v1/jobs/{ref}", headers=bearer(tok)).json()
        assert d["job"]["id"] == job["id"] and d["placement"]["reason"] == "queued"
        assert [e["kind"] for e in d["events"]] == ["submitted"]
        assert d["job"]["spec"]["queue"] == "research"
    r = httpx.post(f"{url}/api/v1/jobs/{job['id']}:cancel", headers=bearer(tok))
    assert r.status_code == 200 and r.json()["outcome"] == "cancelled" and r.json()["job"]["state"] == "cancelled"
    assert store.job(job["id"]).state == JobState.CANCELLED
    body = assert_problem(httpx.post(f"{url}/api/v1/jobs/{job['id']}:cancel", headers=bearer(tok)), 409)
    assert "is cancelled" in body["detail"]
    assert_problem(httpx.delete(f"{url}/api/v1/jobs/{job['id']}", headers=bearer(tok)), 409)
    body = assert_problem(httpx.get(f"{url}/api/v1/jobs/nope", headers=bearer(tok)), 404)
    assert "unknown job 'nope'" in body["detail"]
    # a dispatched job is only asked to stop: the loop removes it from its cluster
    [job2] = httpx.post(f"{url}/api/v1/jobs", json=training_job("gpt"), headers=bearer(tok)).json()["jobs"]
    store.transition(job2["id"], [JobState.PENDING], JobState.DISPATCHED, now=time.time(), message="test",
                     cluster="onprem")
    r = httpx.delete(f"{url}/api/v1/jobs/{job2['id']}", headers=bearer(tok))
    assert r.json()["outcome"] == "cancelling" and "removes it from onprem" in r.json()["message"]
    d = httpx.get(f"{url}/api/v1/jobs/{job2['id']}", headers=bearer(tok)).json()
    assert d["events"][-1]["to_state"] == "cancelling"


# ---- clusters, cost, policy, health -----------------------------------------------------------------


def test_clusters_cost_policy_and_health(api):
    url, config, store, tok = api
    clusters = httpx.get(f"{url}/api/v1/clusters", headers=bearer(tok)).json()
    assert [c["name"] for c in clusters] == ["onprem", "aws"]
    assert clusters[0]["node_groups"][0]["gpus_per_node"] == 8 and clusters[0]["observed"] is False
    assert clusters[1]["pools"][0]["instance_type"] == "p4d.24xlarge" and clusters[1]["pools"][0]["price_per_hour"] > 0
    for by in ("cloud", "cluster", "pool", "queue", "team", "job"):
        rep = httpx.get(f"{url}/api/v1/cost", params={"by": by}, headers=bearer(tok)).json()
        assert rep["by"] == by and rep["rows"] == [] and rep["scope"] == "team:ml"
    policy = httpx.get(f"{url}/api/v1/policy", headers=bearer(tok)).json()
    assert policy["value_of_time_per_gpu_hour"] == config.policy.value_of_time_per_gpu_hour
    assert policy["max_cloud_gpus"] == 64 and [q["team"] for q in policy["queues"]] == ["ml", "platform"]
    assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{url}/readyz").json() == {"status": "ready"}
    spec = httpx.get(f"{url}/openapi.json").json()
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            assert "200" in op["responses"] or "201" in op["responses"], (path, method)
            if path.startswith("/api/v1"):
                assert {"401", "500"} <= set(op["responses"]), (path, method)
            for code, resp in op["responses"].items():
                if int(code) >= 400:
                    assert list(resp["content"]) == [PROBLEM], (path, method, code)


@pytest.mark.postgres
def test_readyz_is_503_when_the_store_stops_answering(pg_url):
    import psycopg

    from conftest import PG_ADMIN

    config = make_config(store={"url": pg_url})
    store = Store(pg_url)
    served = serve(config, store)
    try:
        assert httpx.get(f"{served.url}/readyz").status_code == 200
        name = pg_url.rsplit("/", 1)[1]
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        body = assert_problem(httpx.get(f"{served.url}/readyz"), 503)
        assert "postgres" not in body["detail"].lower()
        assert httpx.get(f"{served.url}/healthz").status_code == 200
    finally:
        served.stop()


def test_a_route_added_after_the_app_is_built_fails_as_a_500_problem_without_internals(tmp_path):
    from spillover.scheduler.api import create_app
    from api_helpers import Served

    url_db = f"sqlite:///{tmp_path / 's.db'}"
    app = create_app(make_config(store={"url": url_db}))

    @app.get("/boom")
    def boom():
        raise RuntimeError("secret internal state at /var/lib/x")

    served = Served(app, log_level="critical")
    try:
        body = assert_problem(httpx.get(f"{served.url}/boom"), 500)
        assert "secret" not in json.dumps(body) and "RuntimeError" not in json.dumps(body)
    finally:
        served.stop()


# ---- the CLI's bounded reading ------------------------------------------------------------------------


def test_cli_submit_reads_at_most_the_limit_and_takes_stdin(tmp_path):
    cfg = loop_config(tmp_path, f"sqlite:///{tmp_path / 'store.db'}")
    r = subprocess.run([*SPILLOVER, "submit", "/dev/zero", "-c", str(cfg)], capture_output=True, text=True,
                       env=env(), timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == "error: /dev/zero: larger than the limit of 1,048,576 bytes (api.max_body_bytes)"
    r = subprocess.run([*SPILLOVER, "submit", "-", "-c", str(cfg)], input=yaml.safe_dump(training_job("stdin")),
                       capture_output=True, text=True, env=env(), timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("submitted stdin-"), r.stderr


# ---- a job's whole life -----------------------------------------------------------------------------


def _wait(predicate, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("timed out")


class _Loop:
    """The real control loop on simulated clusters and the real clock, in a thread of its own with its own store."""

    def __init__(self, config, tmp_path) -> None:
        from spillover.scheduler.clock import RealClock
        from spillover.scheduler.loop import ControlLoop
        from spillover.scheduler.wiring import build_providers

        clock = RealClock()
        self.store = Store(config.store.url)
        self.loop = ControlLoop(config, self.store, build_providers(config, clock, state_dir=tmp_path / "sim"), clock)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.loop.run, kwargs={"should_stop": self.done.is_set}, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.done.set()
        self.thread.join(timeout=30)
        self.store.close()


def _start_loop(config, tmp_path) -> _Loop:
    return _Loop(config, tmp_path)


def test_a_job_life_through_the_sdk_and_through_the_cli_with_server(tmp_path):
    from spillover.client import Client, InvalidRequest, NotFound, Unreachable
    from spillover.scheduler.config import load_config

    cfg_path = loop_config(tmp_path, f"sqlite:///{tmp_path / 'store.db'}")
    config = load_config(cfg_path)
    store = Store(config.store.url)
    served = serve(config, store)
    tok = token(store, "ml", "submitter")
    loop = None
    try:
        client = Client(served.url, tok)
        [sdk_job] = client.submit([training_job("via-sdk", gpus=2, estimatedRuntime="1s")])
        jobs_file = tmp_path / "job.yaml"
        jobs_file.write_text(yaml.safe_dump(training_job("via-cli", gpus=8, estimatedRuntime="2s")))
        cli_env = env(SPILLOVER_SERVER=served.url, SPILLOVER_TOKEN=tok)

        def cli(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run([*SPILLOVER, *args], capture_output=True, text=True, env=cli_env, timeout=60)

        r = cli("submit", str(jobs_file))
        assert r.returncode == 0 and r.stdout.startswith("submitted via-cli-"), r.stderr
        cli_id = r.stdout.split()[1]
        loop = _start_loop(config, tmp_path)
        done = _wait(lambda: all(client.job(i).job.state == JobState.SUCCEEDED for i in (sdk_job.id, cli_id)))
        assert done
        # the SDK: where it ran and why, and what it cost
        d = client.job(sdk_job.id)
        assert d.job.cluster in ("onprem", "aws") and d.job.started_at and d.job.finished_at
        assert d.placement.events and d.placement.events[0].kind in ("placed", "burst")
        assert d.placement.events[0].message
        assert [e.to_state for e in d.events if e.to_state][-1] == "succeeded"
        assert [j.id for j in client.jobs(state=["succeeded"])] == [cli_id, sdk_job.id]
        # stopping, the loop charges the node time it saw to the ledger
        loop.stop()
        report = client.cost("job")
        assert {sdk_job.id, cli_id} <= {r.key for r in report.rows}, report
        assert report.total_usd > 0 and report.scope == "team:ml"
        with pytest.raises(NotFound):
            client.job("nope")
        with pytest.raises(InvalidRequest) as bad:
            client.submit("apiVersion: spillover/v1alpha1\nkind: TrainingJob\nmetadata: {name: x}\nspec: {}\n")
        assert bad.value.status == 422 and "spec.queue" in {e["field"] for e in bad.value.errors}
        # the CLI through the server shows what it shows in its local mode
        local = subprocess.run([*SPILLOVER, "describe", cli_id, "-c", str(cfg_path)], capture_output=True,
                               text=True, env=env(), timeout=60)
        remote = cli("describe", cli_id)
        assert remote.returncode == 0 and remote.stdout == local.stdout
        assert f"where: {d.job.cluster}" in cli("describe", sdk_job.id).stdout
        assert "why: " in remote.stdout and "succeeded" in remote.stdout
        fin = token(store, "finance", "finance")  # every cost row, as the local mode shows
        for args in (["jobs"], ["clusters"], ["cost-report", "--by", "job", "--format", "json"],
                     ["cost-report", "--by", "cloud"]):
            remote = (cli(*args) if args[0] != "cost-report" else
                      subprocess.run([*SPILLOVER, *args], capture_output=True, text=True, timeout=60,
                                     env=env(SPILLOVER_SERVER=served.url, SPILLOVER_TOKEN=fin)))
            local = subprocess.run([*SPILLOVER, *args, "-c", str(cfg_path)], capture_output=True, text=True,
                                   env=env(), timeout=60)
            assert remote.returncode == 0 and remote.stdout == local.stdout, (args, remote.stderr)
        rows = json.loads(cli("cost-report", "--by", "job", "--format", "json").stdout)
        assert cli_id in {r["job"] for r in rows}
        # server errors become the same one-line errors
        r = cli("cancel", cli_id)
        assert r.returncode == 2 and r.stderr.strip() == (
            f"error: job {cli_id} is succeeded; only queued or running jobs can be cancelled")
        bad_file = tmp_path / "bad.yaml"
        bad_file.write_text(yaml.safe_dump(training_job(gpus=0)))
        r = cli("submit", str(bad_file))
        assert r.returncode == 2 and r.stderr.strip() == f"error: {bad_file}: spec.gpus: must be at least 1 (got 0)"
        r = cli("describe", "nope")
        assert r.returncode == 2 and "unknown job 'nope'" in r.stderr and len(r.stderr.strip().splitlines()) == 1
        r = subprocess.run([*SPILLOVER, "jobs", "--server", "http://127.0.0.1:9"], capture_output=True, text=True,
                           env=env(), timeout=60)
        assert r.returncode == 3 and r.stderr.startswith("error: cannot reach http://127.0.0.1:9")
        assert "Traceback" not in r.stderr
        with pytest.raises(Unreachable):
            Client("http://127.0.0.1:9").policy()
    finally:
        if loop is not None:
            loop.stop()
        served.stop()
