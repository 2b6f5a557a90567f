"""What the price fetchers share: rows asked for, quotes returned, one-line classified errors, JSON over HTTP."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

TIMEOUT_S = (5.0, 60.0)  # connect, read: a Billing Catalog page of 5,000 SKUs takes a few seconds
MAX_PAGES = 500  # a pager that never ends is a broken server, not a big catalog
_MAX_DETAIL = 200

ErrorKind = Literal["unreachable", "http", "auth", "throttled", "unparseable"]

Key = tuple[str, str]
"""(region, instance type)"""


@dataclass(frozen=True)
class RowSpec:
    """A catalog row to price: where, which instance type, and the hardware GCP prices part by part."""

    region: str
    instance_type: str
    gpu_type: str
    gpus: int
    vcpus: int
    memory_gib: float

    @property
    def key(self) -> Key:
        return (self.region, self.instance_type)


class Quote(NamedTuple):
    """Hourly USD prices; spot None means the API gave no spot price (the caller keeps the previous one)."""

    on_demand: float
    spot: float | None


@dataclass
class FetchResult:
    """Quotes for the rows the API lists (a row it does not list is absent, maybe with a reason), notes on
    partial data, and the number of requests made."""

    quotes: dict[Key, Quote] = field(default_factory=dict)
    reasons: dict[Key, str] = field(default_factory=dict)
    spot_unread: set[Key] = field(default_factory=set)  # rows whose spot price a warning already explains
    warnings: list[str] = field(default_factory=list)
    requests: int = 0


class PriceFetchError(Exception):
    """A cloud's prices could not be read at all; str() is one line: '<kind>: <what happened>'."""

    def __init__(self, kind: ErrorKind, detail: str) -> None:
        self.kind = kind
        self.detail = " ".join(detail.split())[:_MAX_DETAIL * 2]
        super().__init__(f"{kind}: {self.detail}")


_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+")
_SECRET_PARAM = re.compile(r"(?i)((?:key|token|access_token|signature|x-amz-[a-z-]+)=)[^&\s'\"]+")


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """`text` without the given secrets and without anything shaped like a bearer token or a key parameter."""
    for secret in sorted((s for s in secrets if s and len(s) >= 4), key=len, reverse=True):
        text = text.replace(secret, "***")
    text = _BEARER.sub(r"\1***", text)
    return _SECRET_PARAM.sub(r"\1***", text)


def host_of(url: str) -> str:
    """scheme://host[:port] of a URL, for messages: no path, no query, no user info."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


def http_session() -> requests.Session:
    """A session that retries connection failures, 429 and 5xx twice with a short backoff, then gives the answer."""
    retry = Retry(
        total=2,
        backoff_factor=0.5,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=frozenset({"GET"}),
        raise_on_status=False,
        # a server's Retry-After could stall the command for minutes; the next refresh is the better retry
        respect_retry_after_header=False,
    )
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _connection_cause(exc: BaseException) -> str:
    text = str(exc).lower()
    for needle, cause in (
        ("refused", "connection refused"),
        ("name or service not known", "name does not resolve"),
        ("nodename nor servname", "name does not resolve"),
        ("temporary failure in name resolution", "name does not resolve"),
        ("failed to resolve", "name does not resolve"),
        ("timed out", "timed out"),
        ("certificate", "TLS certificate not trusted"),
        ("ssl", "TLS handshake failed"),
        ("network is unreachable", "network is unreachable"),
        ("reset by peer", "connection reset"),
    ):
        if needle in text:
            return cause
    return "connection failed"


def _error_message(response: requests.Response) -> str:
    """The API's own explanation from an error body (Google and Azure both nest it under "error")."""
    try:
        body = response.json()
    except ValueError:
        return " ".join(response.text.split())[:_MAX_DETAIL]
    if isinstance(body, Mapping):
        error = body.get("error", body)
        if isinstance(error, Mapping):
            message = error.get("message") or error.get("Message") or error.get("status") or error.get("code")
            if message:
                return " ".join(str(message).split())[:_MAX_DETAIL]
        elif isinstance(error, str):
            return error[:_MAX_DETAIL]
    return ""


def get_json(
    session: requests.Session,
    url: str,
    *,
    params: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    what: str,
    secrets: Iterable[str | None] = (),
) -> Any:
    """GET `url` and parse JSON; any failure is a PriceFetchError naming the host and `what` was asked for."""
    secrets = list(secrets)
    where = host_of(url)
    try:
        response = session.get(url, params=params, headers=headers, timeout=TIMEOUT_S)
    except requests.Timeout:
        raise PriceFetchError("unreachable", f"{where} did not answer {what} in time") from None
    except requests.ConnectionError as exc:
        raise PriceFetchError("unreachable", f"cannot reach {where} ({_connection_cause(exc)})") from None
    except requests.RequestException as exc:
        raise PriceFetchError("unreachable", redact(f"{where}: {type(exc).__name__}", secrets)) from None
    if response.status_code >= 400:
        message = redact(_error_message(response), secrets)
        detail = f"HTTP {response.status_code} from {where} for {what}" + (f": {message}" if message else "")
        kind: ErrorKind = (
            # Google answers a bad API key with 400 INVALID_ARGUMENT, not 401
            "auth" if response.status_code in (401, 403) or "API key" in message
            else "throttled" if response.status_code == 429
            else "http"
        )
        raise PriceFetchError(kind, detail)
    try:
        return response.json()
    except (ValueError, json.JSONDecodeError):
        kind_of = response.headers.get("Content-Type", "no content type").split(";")[0]
        raise PriceFetchError("unparseable", f"{where} answered {what} with {kind_of}, not JSON") from None
