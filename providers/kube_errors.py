"""Turns failures of Kubernetes API calls into classified ProviderErrors whose messages carry no secrets."""

from __future__ import annotations

import json
import re
import socket
import ssl
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import urllib3
from kubernetes.client import Configuration
from kubernetes.client.exceptions import ApiException, ApiValueError
from kubernetes.config.config_exception import ConfigException

from spillover.providers.contract import ErrorKind, ProviderError

_MAX_DETAIL = 300
_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+")
_SECRET_PARAM = re.compile(r"(?i)((?:token|password|secret|signature|x-amz-[a-z-]+)=)[^&\s'\"]+")


class Expired(Exception):
    """The API no longer has the history asked for (410 Gone): the cache must list again."""


class Redactor:
    """Removes credentials from text: the client's current token/password, and anything shaped like one."""

    def __init__(self, configuration: Configuration | None) -> None:
        self._configuration = configuration

    def secrets(self) -> list[str]:
        c = self._configuration
        if c is None:
            return []
        out: list[str] = []
        for value in (getattr(c, "api_key", None) or {}).values():
            if isinstance(value, str):
                out.append(value)
                # "Bearer <token>" is stored whole by some loaders and prefixed by others
                if " " in value:
                    out.append(value.split(" ", 1)[1])
        for attr in ("password",):
            value = getattr(c, attr, None)
            if isinstance(value, str):
                out.append(value)
        return [s for s in out if len(s) >= 4]

    def __call__(self, text: str) -> str:
        for secret in sorted(self.secrets(), key=len, reverse=True):
            text = text.replace(secret, "***")
        text = _BEARER.sub(r"\1***", text)
        return _SECRET_PARAM.sub(r"\1***", text)


def safe_host(configuration: Configuration | None) -> str:
    """The API's URL without user info, for messages."""
    host = getattr(configuration, "host", "") or ""
    try:
        parts = urlsplit(host)
    except ValueError:
        return "the Kubernetes API"
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", "")) or "the Kubernetes API"


def status_body(exc: ApiException) -> dict[str, Any]:
    """The Kubernetes Status object an error response carries, or {}."""
    body = exc.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if not body:
        return {}
    try:
        data = json.loads(body)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def api_detail(exc: ApiException) -> str:
    """The API's own explanation: the Status message (it names the verb and resource denied), else the reason."""
    status = status_body(exc)
    message = status.get("message") if isinstance(status.get("message"), str) else ""
    return message or str(exc.reason or "") or "no detail"


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 3] + "..."


def _transport_reason(exc: BaseException) -> str:
    """One phrase for a connection-level failure, without the URL and headers urllib3 puts in its messages."""
    cause: BaseException | None = exc
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        cause = exc.reason
    # urllib3 derives NewConnectionError from ConnectTimeoutError, so the specific cases come first
    if isinstance(cause, urllib3.exceptions.NameResolutionError):
        return "host name does not resolve"
    if isinstance(cause, urllib3.exceptions.NewConnectionError):
        inner = cause.__cause__ or cause.__context__
        if isinstance(inner, ConnectionRefusedError) or "refused" in str(cause).lower():
            return "connection refused"
        return "cannot connect"
    if isinstance(cause, urllib3.exceptions.ConnectTimeoutError):
        return "connection timed out"
    if isinstance(cause, (urllib3.exceptions.ReadTimeoutError, socket.timeout, TimeoutError)):
        return "no answer before the request timeout"
    if isinstance(cause, (urllib3.exceptions.SSLError, ssl.SSLError)):
        return "TLS handshake failed"
    if isinstance(cause, (urllib3.exceptions.ProtocolError, ConnectionError)):
        return "connection lost"
    return type(cause).__name__ if cause is not None else "connection failed"


def classify(exc: BaseException, *, action: str, cluster: str, redact: Callable[[str], str],
             host: str, at: float | None = None, request_id: str | None = None) -> ProviderError:
    """Map one failure of `action` (e.g. "create Job ns/name") to a ProviderError the loop can act on."""

    def err(kind: ErrorKind, detail: str) -> ProviderError:
        return ProviderError(kind, redact(_short(f"{action}: {detail}")), cluster=cluster, at=at,
                             request_id=request_id)

    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, Expired):
        return err(ErrorKind.TRANSIENT, "HTTP 410 Gone: the API no longer has the changes since the cache's "
                   "last version; listed again")
    if isinstance(exc, ApiException):
        code = int(exc.status or 0)
        detail = api_detail(exc)
        if code == 0:  # the REST layer's wrapper for TLS failures and malformed requests
            return err(ErrorKind.UNREACHABLE, f"{host}: {detail}")
        if code in (401, 403):
            if code == 403 and "being terminated" in detail:
                # a namespace on its way out refuses new objects; it is gone (and recreatable) shortly
                return err(ErrorKind.TRANSIENT, f"HTTP 403: {detail}")
            return err(ErrorKind.AUTH, f"HTTP {code} {'Unauthorized' if code == 401 else 'Forbidden'}: {detail}")
        if code == 410:
            return err(ErrorKind.TRANSIENT, f"HTTP 410 Gone: {detail}")
        if code == 429:
            return err(ErrorKind.THROTTLED, f"HTTP 429 Too Many Requests: {detail}")
        if code >= 500:
            return err(ErrorKind.TRANSIENT, f"HTTP {code}: {detail}")
        return err(ErrorKind.INVALID, f"HTTP {code}: {detail}")
    if isinstance(exc, (urllib3.exceptions.HTTPError, OSError)):
        return err(ErrorKind.UNREACHABLE, f"cannot reach {host}: {_transport_reason(exc)}")
    if isinstance(exc, ConfigException):
        return err(ErrorKind.AUTH, f"credentials could not be loaded: {exc}")
    if isinstance(exc, (ApiValueError, TypeError)):
        return err(ErrorKind.INVALID, f"{type(exc).__name__}: {exc}")
    if isinstance(exc, ValueError):  # a body that is not the JSON the API promises
        return err(ErrorKind.TRANSIENT, f"malformed answer from {host}: {type(exc).__name__}")
    return err(ErrorKind.TRANSIENT, f"{type(exc).__name__}: {exc}")


def status_error(status: dict[str, Any]) -> ApiException:
    """An ApiException for an ERROR event inside a watch stream, so it classifies like a failed request."""
    e = ApiException(status=int(status.get("code") or 500), reason=str(status.get("reason") or "Error"))
    e.body = json.dumps(status)
    return e


def first(items: Iterable[ProviderError]) -> ProviderError | None:
    """The error that explains most: auth before unreachability before the rest."""
    order = {ErrorKind.AUTH: 0, ErrorKind.UNREACHABLE: 1, ErrorKind.THROTTLED: 2}
    ranked = sorted(items, key=lambda e: order.get(e.kind, 3))
    return ranked[0] if ranked else None
