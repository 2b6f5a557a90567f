"""The Python SDK of Spillover's HTTP API: `Client(server, token).submit(...)`, errors as typed exceptions."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx

from spillover.scheduler.api_models import (
    BudgetReport,
    CancelResult,
    ClusterOut,
    CostReport,
    JobDetail,
    JobOut,
    JobPage,
    PolicyOut,
    SubmitResult,
)

__all__ = ["Client", "ApiError", "Unauthorized", "Forbidden", "NotFound", "Conflict", "InvalidRequest",
           "TooLarge", "ServerError", "Unreachable"]


class ApiError(Exception):
    """A problem+json answer: HTTP status, its title, the one-line detail and, for invalid input, the fields."""

    def __init__(self, status: int, title: str, detail: str, errors: list[dict[str, str]] | None = None,
                 type: str = "about:blank") -> None:
        super().__init__(detail or title)
        self.status, self.title, self.detail, self.errors, self.type = status, title, detail, errors or [], type

    def __str__(self) -> str:
        return self.detail or f"{self.status} {self.title}"


class Unauthorized(ApiError):
    """401: no token, or one the server does not know (or revoked)."""


class Forbidden(ApiError):
    """403: the token's role or team may not do this."""


class NotFound(ApiError):
    """404: no such job, or not one this token may see."""


class Conflict(ApiError):
    """409: the job's state does not allow it."""


class InvalidRequest(ApiError):
    """400 or 422: the input is wrong; `errors` names each field."""


class TooLarge(ApiError):
    """413: the body or its number of jobs is over the server's limit."""


class ServerError(ApiError):
    """5xx: the server or its store failed."""


class Unreachable(ApiError):
    """No answer from the server at all (status 0)."""


_BY_STATUS = {401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict, 400: InvalidRequest,
              422: InvalidRequest, 413: TooLarge}


def _raise_for(resp: httpx.Response) -> None:
    if resp.status_code < 400:
        return
    try:
        body = resp.json()
        if not isinstance(body, dict):
            raise ValueError
    except ValueError:
        body = {"title": resp.reason_phrase, "detail": resp.text[:200].strip()}
    cls = _BY_STATUS.get(resp.status_code, ServerError if resp.status_code >= 500 else ApiError)
    raise cls(resp.status_code, str(body.get("title", resp.reason_phrase)), str(body.get("detail", "")),
              body.get("errors") or None, str(body.get("type", "about:blank")))


When = float | int | datetime | str
JobsInput = str | Path | Mapping[str, Any] | Sequence[Mapping[str, Any]]


class Client:
    """A client of one Spillover server. `token` comes from `spillover token create`."""

    def __init__(self, server: str, token: str | None = None, timeout: float = 30.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.server = server.rstrip("/")
        self._http = httpx.Client(base_url=self.server, headers=headers, timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            resp = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise Unreachable(0, "Unreachable", f"cannot reach {self.server}: {exc or type(exc).__name__}") from None
        _raise_for(resp)
        return resp.json()

    def submit(self, jobs: JobsInput, *, max_bytes: int | None = None) -> list[JobOut]:
        """Submit one or many jobs, all or none: documents (a mapping or a list of them), YAML or JSON text, or a
        Path to a job file."""
        if isinstance(jobs, Path):
            from spillover.scheduler.intake import DEFAULT_MAX_BYTES, read_job_file

            jobs = read_job_file(jobs, max_bytes or DEFAULT_MAX_BYTES)
        if isinstance(jobs, str):
            content, ctype = jobs.encode("utf-8"), "application/yaml"
        else:
            docs = jobs if isinstance(jobs, Mapping) else list(jobs)
            content, ctype = json.dumps(docs).encode("utf-8"), "application/json"
        data = self._call("POST", "/api/v1/jobs", content=content, headers={"Content-Type": ctype})
        return SubmitResult.model_validate(data).jobs

    def jobs_page(self, *, state: Iterable[str] | None = None, queue: str | None = None, team: str | None = None,
                  limit: int = 50, cont: str | None = None) -> JobPage:
        params: list[tuple[str, Any]] = [("state", getattr(s, "value", s)) for s in state or ()]
        params += [(k, v) for k, v in (("queue", queue), ("team", team), ("limit", limit), ("continue", cont))
                   if v is not None]
        return JobPage.model_validate(self._call("GET", "/api/v1/jobs", params=params))

    def jobs(self, *, state: Iterable[str] | None = None, queue: str | None = None, team: str | None = None,
             page_size: int = 200, limit: int | None = None) -> Iterator[JobOut]:
        """Jobs newest first, page after page (at most `limit` in all)."""
        states = list(state or ())
        cont: str | None = None
        given = 0
        while True:
            page = self.jobs_page(state=states, queue=queue, team=team, limit=page_size, cont=cont)
            for j in page.items:
                if limit is not None and given >= limit:
                    return
                given += 1
                yield j
            cont = page.continue_
            if not cont:
                return

    def job(self, job_id: str) -> JobDetail:
        """One job (by id or name) with its events and placement."""
        return JobDetail.model_validate(self._call("GET", f"/api/v1/jobs/{_quote(job_id)}"))

    def cancel(self, job_id: str) -> CancelResult:
        return CancelResult.model_validate(self._call("POST", f"/api/v1/jobs/{_quote(job_id)}:cancel"))

    def clusters(self) -> list[ClusterOut]:
        return [ClusterOut.model_validate(c) for c in self._call("GET", "/api/v1/clusters")]

    def cost(self, by: str = "cloud", *, split: str | None = None, since: When | None = None,
             until: When | None = None) -> CostReport:
        """The cost ledger grouped by cloud, cluster, pool, queue, team or job, or per day, week or month (with
        `split`: cloud, team or queue), over hour buckets in [since, until). A time is epoch seconds, a datetime
        (UTC when naive), or text as the server reads it: ISO 8601, YYYY-MM, or back from now (7d, 24h, 90m, 2w)."""
        params = {"by": by, "split": split, "since": _when(since), "until": _when(until)}
        return CostReport.model_validate(self._call("GET", "/api/v1/cost",
                                                    params={k: v for k, v in params.items() if v is not None}))

    def budgets(self) -> BudgetReport:
        """Each budget line this token may read against its spend in the period open now."""
        return BudgetReport.model_validate(self._call("GET", "/api/v1/budgets"))

    def policy(self) -> PolicyOut:
        return PolicyOut.model_validate(self._call("GET", "/api/v1/policy"))


def _when(t: When | None) -> str | None:
    if t is None or isinstance(t, str):
        return t
    if isinstance(t, datetime):
        return (t if t.tzinfo is not None else t.replace(tzinfo=timezone.utc)).isoformat()
    return datetime.fromtimestamp(float(t), timezone.utc).isoformat()


def _quote(part: str) -> str:
    from urllib.parse import quote

    return quote(part, safe="")
