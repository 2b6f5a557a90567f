"""The HTTP API of `spillover serve`: submit and follow jobs, read clusters, costs and the policy, under /api/v1.

Every error is RFC 9457 problem+json; bearer tokens (scheduler/auth.py) decide what a caller sees.
"""

import base64
import binascii
import json
import logging
import threading
from collections.abc import Callable
from http import HTTPStatus
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from spillover.scheduler.api_models import (
    BudgetReport,
    CancelResult,
    ClusterOut,
    CostReport,
    Health,
    JobDetail,
    JobOut,
    JobPage,
    PolicyOut,
    Problem,
    ReportBy,
    Split,
    SubmitResult,
    cluster_overview,
)
from spillover.scheduler.auth import Principal, authenticate
from spillover.scheduler.clock import RealClock
from spillover.scheduler.config import SpilloverConfig
from spillover.scheduler.errors import (
    ConflictError,
    JobSpecError,
    StoreUnavailableError,
    UnknownJobError,
    UnknownQueueError,
    UserError,
)
from spillover.scheduler.intake import (
    FieldProblem,
    InvalidJobs,
    cancel_job,
    documents_of,
    parse_documents,
    submit_specs,
    teams_of,
)
from spillover.scheduler.model import JobState
from spillover.scheduler.store import Store

log = logging.getLogger("spillover.api")
PREFIX = "/api/v1"
PROBLEM_JSON = "application/problem+json"
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml")


class ApiProblem(Exception):
    """Raised in a route to answer with a problem."""

    def __init__(self, status: int, detail: str, errors: list[FieldProblem] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.errors, self.headers = status, detail, errors, headers


def problem_response(status: int, detail: str, errors: list[FieldProblem] | None = None,
                     headers: dict[str, str] | None = None) -> Response:
    body: dict[str, Any] = {"type": "about:blank", "title": HTTPStatus(status).phrase, "status": status,
                            "detail": detail}
    if errors is not None:
        body["errors"] = [{"field": e.field, "message": e.message} for e in errors]
    return Response(json.dumps(body), status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _status_of(exc: UserError) -> int:
    if isinstance(exc, UnknownJobError):
        return 404
    if isinstance(exc, ConflictError):
        return 409
    if isinstance(exc, StoreUnavailableError):
        return 503
    if isinstance(exc, UnknownQueueError | JobSpecError):
        return 422
    return 400


class BodyLimit:
    """Refuses a request body over `max_bytes` with 413, without reading it whole: by its Content-Length, and for
    a chunked body by counting bytes as they arrive. Pure ASGI, so it sees the body before any route does."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    await problem_response(400, "Content-Length: not a number")(scope, receive, send)
                    return
                if length > limit:
                    await self._refuse(scope, receive, send)
                    return
        seen = 0
        started = False

        async def counting_receive() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge()
            return message

        async def tracking_send(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._refuse(scope, receive, send)

    async def _refuse(self, scope: dict, receive: Callable, send: Callable) -> None:
        # Connection: close, so the client does not send the rest of a body nobody reads
        await problem_response(413, f"request body larger than the limit of {self.max_bytes:,} bytes "
                                    "(api.max_body_bytes)", headers={"Connection": "close"})(scope, receive, send)


class _TooLarge(Exception):
    pass


def _problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for error responses, all problem+json (moved there from application/json in `_openapi`)."""
    words = {400: "the request is malformed", 401: "no valid bearer token", 403: "the token may not do this",
             404: "no such job (or not one this token may see)", 409: "the job's state does not allow it",
             413: "the body or the number of jobs is over the limit", 415: "the body is not JSON or YAML",
             422: "invalid input; errors names each field", 500: "an unexpected error (details in the server log)",
             503: "the store does not answer"}
    return {c: {"model": Problem, "description": words[c]} for c in codes}


_bearer = HTTPBearer(auto_error=False, description="a token from `spillover token create`")


class _Pending:
    def __init__(self, specs: list) -> None:
        self.specs, self.done, self.jobs, self.error = specs, False, None, None


class GroupCommit:
    """Submits that arrive while another is being written go together into the next transaction. Writers take
    turns on the store anyway (SQLite's lock, PostgreSQL's event-order lock), and on PostgreSQL each commit waits
    for its flush to disk: one commit for many concurrent requests is what lets single submits scale. Each
    request's jobs were checked before; should a shared transaction fail, each request is written alone, so one
    request's failure is never another's."""

    def __init__(self, write: Callable[[list], list]) -> None:
        self.write = write
        self.cond = threading.Condition()
        self.queue: list[_Pending] = []
        self.busy = False

    def submit(self, specs: list) -> list:
        item = _Pending(specs)
        with self.cond:
            self.queue.append(item)
            while self.busy and not item.done:
                self.cond.wait()
            if not item.done:
                self.busy = True
                batch, self.queue = self.queue, []
        if not item.done:
            try:
                self._write(batch)
            finally:
                with self.cond:
                    self.busy = False
                    for it in batch:
                        it.done = True
                    self.cond.notify_all()
        if item.error is not None:
            raise item.error
        return item.jobs

    def _write(self, batch: list[_Pending]) -> None:
        if len(batch) > 1:
            try:
                jobs = self.write([s for it in batch for s in it.specs])
            except Exception:
                jobs = None  # written one by one below
            if jobs is not None:
                at = 0
                for it in batch:
                    it.jobs, at = jobs[at:at + len(it.specs)], at + len(it.specs)
                return
        for it in batch:
            try:
                it.jobs = self.write(it.specs)
            except Exception as exc:  # noqa: BLE001 (handed to the request it belongs to)
                it.error = exc


class Api:
    """The routes' shared state: config, store, submits grouped into shared transactions, and a lock for the
    store's other writes (the store keeps one connection for some of them)."""

    def __init__(self, config: SpilloverConfig, store: Store) -> None:
        self.config, self.store = config, store
        self.teams = teams_of(config)
        self.write_lock = threading.Lock()
        self.clock = RealClock()
        self.submits = GroupCommit(self._store_jobs)

    def _store_jobs(self, specs: list) -> list:
        with self.write_lock:
            return submit_specs(self.store, self.config, specs, now=self.clock.now())

    def principal(self, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Principal:
        # in a worker thread, like the routes: a slow store must not stall the event loop (and /healthz with it)
        p = authenticate(self.store, creds.credentials if creds is not None else None)
        if p is None:
            # the same answer for a missing, malformed, unknown or revoked token
            raise ApiProblem(401, "a valid bearer token is required (Authorization: Bearer TOKEN)",
                             headers={"WWW-Authenticate": 'Bearer realm="spillover"'})
        return p


def _cursor(text: str) -> tuple[float, str]:
    try:
        at, jid = json.loads(base64.urlsafe_b64decode(text.encode() + b"=" * (-len(text) % 4)))
        if isinstance(at, bool) or not isinstance(at, int | float) or not isinstance(jid, str):
            raise ValueError
        return float(at), jid
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise ApiProblem(400, "query.continue: not a token this server gave out",
                         [FieldProblem("query.continue", "not a token this server gave out")]) from None


def _next_cursor(at: float, jid: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([at, jid]).encode()).decode().rstrip("=")


def _json(model: Any, status: int = 200) -> Response:
    # serialized once, without FastAPI validating the model it was just built from
    return Response(model.model_dump_json(by_alias=True), status_code=status, media_type="application/json")


def build_router(api: Api) -> APIRouter:
    r = APIRouter(prefix=PREFIX, dependencies=[Depends(api.principal)], responses=_problems(401, 500))
    Who = Annotated[Principal, Depends(api.principal)]

    @r.post("/jobs", status_code=201, response_model=SubmitResult, summary="Submit jobs (all or none)",
            responses=_problems(400, 403, 413, 415, 422), openapi_extra={"requestBody": _SUBMIT_BODY})
    async def submit(request: Request, who: Who) -> Response:
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "application/json" and media not in YAML_TYPES:
            raise ApiProblem(415, f"Content-Type: must be application/json, {', '.join(YAML_TYPES)} "
                                  f"(got {media or 'none'})")
        body = await request.body()
        return await run_in_threadpool(_submit, body, media, who)

    def _submit(body: bytes, media: str, who: Principal) -> Response:
        if not who.may_submit:
            raise ApiProblem(403, f"role {who.role} may not submit jobs")
        docs, many = documents_of(body, media)
        limit = api.config.api.max_jobs_per_request
        if len(docs) > limit:
            raise ApiProblem(413, f"body: {len(docs)} jobs, more than the limit of {limit} per request "
                                  "(api.max_jobs_per_request)")
        specs = parse_documents(docs, many, api.config)
        if who.job_team is not None:
            for i, spec in enumerate(specs):
                team = api.teams[spec.queue]
                if team != who.job_team:
                    where = f"body[{i}].spec.queue" if many else "spec.queue"
                    raise ApiProblem(403, f"{where}: queue {spec.queue!r} belongs to team {team!r}; this token "
                                          f"submits for team {who.team!r}")
        jobs = api.submits.submit(specs)
        log.info("token %s submitted %d job(s): %s", who.token_id, len(jobs), ", ".join(j.id for j in jobs[:5])
                 + (" ..." if len(jobs) > 5 else ""))
        return _json(SubmitResult.model_construct(jobs=[JobOut.of(j) for j in jobs]), 201)

    @r.get("/jobs", response_model=JobPage, summary="List jobs, newest first",
           responses=_problems(400, 422))
    def list_jobs(who: Who,
                  state: Annotated[list[JobState] | None, Query(description="only these states (repeat)")] = None,
                  queue: Annotated[str | None, Query(max_length=200)] = None,
                  team: Annotated[str | None, Query(max_length=200)] = None,
                  limit: Annotated[int, Query(ge=1, le=1000)] = 50,
                  continue_: Annotated[str | None, Query(alias="continue", max_length=1000,
                                                         description="the previous page's `continue`")] = None,
                  ) -> Response:
        before = _cursor(continue_) if continue_ else None
        if who.job_team is not None:
            if team is not None and team != who.job_team:
                return _json(JobPage(items=[], continue_=None))
            team = who.job_team
        rows = api.store.jobs_page(states=state, queue=queue, team=team, limit=limit + 1, before=before)
        more = len(rows) > limit
        rows = rows[:limit]
        nxt = _next_cursor(rows[-1].submitted_at, rows[-1].id) if more else None
        return _json(JobPage.model_construct(items=[JobOut.of(j) for j in rows], continue_=nxt))

    @r.get("/jobs/{job_id}", response_model=JobDetail, summary="One job with its events and placement reason",
           responses=_problems(404))
    def get_job(job_id: str, who: Who) -> Response:
        j = api.store.job(job_id, team=who.job_team)
        return _json(JobDetail.of(j, api.store.events(j.id)))

    def _cancel(job_id: str, who: Principal) -> Response:
        j = api.store.job(job_id, team=who.job_team)  # 404 first: another team's job does not exist for it
        if not who.may_submit:
            raise ApiProblem(403, f"role {who.role} may not cancel jobs")
        with api.write_lock:
            done = cancel_job(api.store, j.id, now=api.clock.now())
        log.info("token %s: %s", who.token_id, done.message)
        return _json(CancelResult.model_construct(job=JobOut.of(done.job), outcome=done.outcome, message=done.message))

    @r.post("/jobs/{job_id}:cancel", response_model=CancelResult, summary="Cancel a job",
            responses=_problems(403, 404, 409))
    def cancel(job_id: str, who: Who) -> Response:
        return _cancel(job_id, who)

    @r.delete("/jobs/{job_id}", response_model=CancelResult, summary="Cancel a job (same as :cancel)",
              responses=_problems(403, 404, 409))
    def delete(job_id: str, who: Who) -> Response:
        return _cancel(job_id, who)

    @r.get("/clusters", response_model=list[ClusterOut], summary="Member clusters and pools")
    def clusters(who: Who) -> Response:
        rows = cluster_overview(api.config, api.store.cluster_statuses(), api.store.pool_statuses(), api.clock.now())
        return Response(json.dumps([c.model_dump(mode="json") for c in rows]), media_type="application/json")

    def _when(name: str, text: str | None, now: float) -> float | None:
        from spillover.scheduler.costs import parse_when

        if text is None:
            return None
        try:
            return parse_when(text, now)
        except ValueError as e:
            raise ApiProblem(422, f"query.{name}: {e}", [FieldProblem(f"query.{name}", str(e))]) from None

    @r.get("/cost", response_model=CostReport, summary="The cost ledger, grouped or per period",
           description="finance, ops and admin read every row; a submitter only what its team's jobs used",
           responses=_problems(422))
    def cost(who: Who, by: Annotated[ReportBy, Query(description="how rows are grouped: a ledger key, or per UTC "
                                                     "day, week (from Monday) or month")] = "cloud",
             split: Annotated[Split | None, Query(description="with a period: a row per period and value")] = None,
             since: Annotated[str | None, Query(max_length=100, description=_WHEN_HELP)] = None,
             until: Annotated[str | None, Query(max_length=100, description="hour buckets before this (as since)")]
             = None) -> Response:
        from spillover.scheduler.cost_views import build_cost_report
        from spillover.scheduler.costs import PERIODS, utc_text

        now = api.clock.now()
        t0, t1 = _when("since", since, now), _when("until", until, now)
        if t0 is not None and t1 is not None and t0 >= t1:
            message = f"must be after since ({utc_text(t1)} is not after {utc_text(t0)})"
            raise ApiProblem(422, f"query.until: {message}", [FieldProblem("query.until", message)])
        if split is not None and by not in PERIODS:
            message = f"only with by=day, week or month (by is {by})"
            raise ApiProblem(422, f"query.split: {message}", [FieldProblem("query.split", message)])
        team = None if who.reads_all_costs else who.team
        return _json(build_cost_report(api.store, by, split=split, since=t0, until=t1, team=team))

    @r.get("/budgets", response_model=BudgetReport, summary="Budget lines against their spend",
           description="each budget line in its period open now, with the forecast for the period's end; finance, "
                       "ops and admin read every line, a submitter its team's and its team's queues'")
    def budgets(who: Who) -> Response:
        from spillover.scheduler.cost_views import build_budget_report

        team = None if who.reads_all_costs else who.team
        return _json(build_budget_report(api.config, api.store, api.clock.now(), team=team))

    @r.get("/policy", response_model=PolicyOut, summary="The active burst policy")
    def policy(who: Who) -> Response:
        return _json(PolicyOut.of(api.config))

    return r


_WHEN_HELP = ("hour buckets from this time on: ISO 8601 (UTC without a zone), YYYY-MM, or back from now: 90m, 24h, 7d, "
              "2w")
_JOB_DOC = {"type": "object", "description": "a TrainingJob (apiVersion spillover/v1alpha1) or a batch/v1 Job",
            "required": ["apiVersion", "kind", "metadata", "spec"],
            "properties": {"apiVersion": {"type": "string", "enum": ["spillover/v1alpha1", "batch/v1"]},
                           "kind": {"type": "string", "enum": ["TrainingJob", "Job"]},
                           "metadata": {"type": "object", "properties": {"name": {"type": "string"}}},
                           "spec": {"type": "object"}}}
_SUBMIT_BODY = {
    "required": True,
    "description": "one job document or many: a JSON object or array, or YAML (several documents or a list)",
    "content": {
        "application/json": {"schema": {"oneOf": [_JOB_DOC, {"type": "array", "items": _JOB_DOC}]},
                             "example": {"apiVersion": "spillover/v1alpha1", "kind": "TrainingJob",
                                         "metadata": {"name": "bert-finetune"},
                                         "spec": {"queue": "research", "image": "ghcr.io/acme/bert:1.4", "gpus": 4,
                                                  "estimatedRuntime": "3h"}}},
        "application/yaml": {"schema": {"type": "string"}},
        "text/yaml": {"schema": {"type": "string"}},
    },
}


def _field_of(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "request"


def create_app(config: SpilloverConfig, store: Store | None = None) -> FastAPI:
    """The API for `config`, on `store` (by default the config's). Routes can still be added to the result."""
    store = store if store is not None else Store(config.store.url)
    api = Api(config, store)
    app = FastAPI(title="Spillover", version="v1", summary="One global queue for GPU training jobs",
                  docs_url="/docs", redoc_url=None)
    app.state.api = api

    @app.exception_handler(ApiProblem)
    async def _problem(_: Request, exc: ApiProblem) -> Response:
        return problem_response(exc.status, exc.detail, exc.errors, exc.headers)

    @app.exception_handler(InvalidJobs)
    async def _invalid_jobs(_: Request, exc: InvalidJobs) -> Response:
        return problem_response(422, "; ".join(f"{p.field}: {p.message}" for p in exc.problems), exc.problems)

    @app.exception_handler(UserError)
    async def _user_error(_: Request, exc: UserError) -> Response:
        status = _status_of(exc)
        errors = None
        if status == 422:
            errors = [FieldProblem(*_split(line)) for line in getattr(exc, "errors", [str(exc)])]
        return problem_response(status, str(exc), errors)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> Response:
        errors = [FieldProblem(_field_of(tuple(e.get("loc", ()))), str(e.get("msg", "invalid")))
                  for e in exc.errors()]
        return problem_response(422, "; ".join(f"{e.field}: {e.message}" for e in errors), errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Response:
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        return problem_response(exc.status_code, detail, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> Response:
        log.error("unexpected %s while answering a request", type(exc).__name__, exc_info=exc)
        return problem_response(500, "unexpected error; the server log has the details")

    @app.get("/healthz", response_model=Health, summary="The process is alive", tags=["health"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", response_model=Health, summary="The store answers", tags=["health"],
             responses=_problems(503))
    def readyz() -> dict[str, str]:
        store.ping()
        return {"status": "ready"}

    from spillover.scheduler.metrics import render, store_registry

    registry = store_registry(store, config)

    # read from the store at each scrape, so every replica serves the same figures; aggregates only, and
    # Prometheus scrapes without a token, as it does /healthz
    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        body, content_type = render(registry)
        return Response(body, media_type=content_type)

    app.include_router(build_router(api))
    app.add_middleware(BodyLimit, max_bytes=config.api.max_body_bytes)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _openapi(get_openapi(title=app.title, version=app.version, summary=app.summary,
                                                      routes=app.routes))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _split(line: str) -> tuple[str, str]:
    from spillover.scheduler.intake import split_line

    path, message = split_line(line)
    return path or "body", message


def _openapi(schema: dict[str, Any]) -> dict[str, Any]:
    """Error responses as application/problem+json with the Problem schema (FastAPI's own 422 included)."""
    ref = {"$ref": "#/components/schemas/Problem"}
    for path in schema.get("paths", {}).values():
        for op in path.values():
            for code, resp in op.get("responses", {}).items():
                if code.isdigit() and int(code) >= 400:
                    resp["content"] = {PROBLEM_JSON: {"schema": ref}}
    comps = schema.setdefault("components", {}).setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        comps.pop(unused, None)
    return schema
