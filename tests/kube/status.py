"""The API server's failures: Status bodies with their HTTP codes, as the real server words them."""

from __future__ import annotations

from .store import RESOURCES


class ApiError(Exception):
    """A failure the server answers with a Status body and the matching HTTP code."""

    def __init__(self, code: int, reason: str, message: str, details: dict | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details
        self.headers = headers or {}

    def status(self) -> dict:
        body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": self.message,
                "reason": self.reason, "code": self.code}
        if self.details:
            body["details"] = self.details
        return body


# The helpers below take the resource's entry of the server's table (`Store.resources`), which custom
# resources join when their CRD is created; the built-in table is the default.

def _qualified(resource: str, info: dict | None = None) -> str:
    group = (info or RESOURCES[resource])["group"]
    return f"{resource}.{group}" if group else resource


def _details(resource: str, name: str | None, info: dict | None = None) -> dict:
    details = {"kind": resource}
    if name:
        details["name"] = name
    group = (info or RESOURCES[resource])["group"]
    if group:
        details["group"] = group
    return details


def not_found(resource: str, name: str, info: dict | None = None) -> ApiError:
    return ApiError(404, "NotFound", f'{_qualified(resource, info)} "{name}" not found',
                    _details(resource, name, info))


def _invalid(resource: str, name: str, problems: list[tuple[str, str]], info: dict | None = None) -> ApiError:
    kind = (info or RESOURCES[resource])["kind"]
    group = (info or RESOURCES[resource])["group"]
    what = f"{kind}.{group}" if group else kind
    causes = []
    for field, message in problems:
        cause = ("FieldValueRequired" if message.startswith("Required") else
                 "FieldValueNotSupported" if message.startswith("Unsupported") else "FieldValueInvalid")
        causes.append({"reason": cause, "message": message, "field": field})
    listed = [f"{f}: {m}" for f, m in problems]
    text = listed[0] if len(listed) == 1 else "[" + ", ".join(listed) + "]"
    details = {"name": name or "", "kind": kind, "causes": causes}
    if group:
        details["group"] = group
    return ApiError(422, "Invalid", f'{what} "{name}" is invalid: {text}', details)


def _bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)
