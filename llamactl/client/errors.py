"""Every error the client raises.

The tree::

    ClientError                 base of every client error; `str(err)` is meant for a user
    ├── ServerUnreachable       nothing answers at the server's URL (not started, wrong URL or port)
    ├── StreamBroken            an event stream dropped and could not be resumed
    └── ApiError                the server answered with an error status; `.status`, `.detail`
        ├── BadRequest          400, 422: a bad deployment file, bad input, a malformed event
        ├── Unauthorized        401: a token is required and was missing or wrong
        ├── NotFound            404: an unknown deployment, service, session or task
        ├── Conflict            409: the deployment exists, or the task has already finished
        ├── TaskFailed          424: `tasks.run` only: the task failed or was cancelled
        └── ServerError         5xx: the server failed (503: the deployment is starting or stopping)

This module imports nothing but the standard library, so a CLI can name these classes cheaply.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ApiError",
    "BadRequest",
    "ClientError",
    "Conflict",
    "NotFound",
    "ServerError",
    "ServerUnreachable",
    "StreamBroken",
    "TaskFailed",
    "Unauthorized",
    "error_for_status",
]


class ClientError(Exception):
    """Base class of every error the client raises."""


class ServerUnreachable(ClientError):
    """Nothing answers at the server's URL."""

    def __init__(self, url: str, reason: str = "") -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"server not reachable at {url}: start it with llamactl serve")


class StreamBroken(ClientError):
    """An event stream dropped and every attempt to resume it failed."""


class ApiError(ClientError):
    """The server answered with an error status.

    Attributes:
        status: the HTTP status code.
        detail: the server's explanation (the ``detail`` of its JSON body).
        body: the whole JSON body, when there was one.
    """

    def __init__(self, status: int, detail: str, body: Any = None) -> None:
        self.status = status
        self.detail = detail
        self.body = body
        super().__init__(detail)


class BadRequest(ApiError):
    """400 or 422: the request was malformed or its content invalid."""


class Unauthorized(ApiError):
    """401: the server needs a token (``LLAMACTL_API_TOKEN``) and got none or a wrong one."""


class NotFound(ApiError):
    """404: an unknown deployment, service, session or task."""


class Conflict(ApiError):
    """409: the request clashes with the current state."""


class TaskFailed(ApiError):
    """424: the task ran and failed, or was cancelled.

    Attributes:
        task_id: the task's id, to look at its events or record.
        task_status: ``failed`` or ``cancelled``.
    """

    def __init__(self, status: int, detail: str, body: Any = None) -> None:
        super().__init__(status, detail, body)
        fields = body if isinstance(body, dict) else {}
        self.task_id: str | None = fields.get("task_id")
        self.task_status: str | None = fields.get("status")


class ServerError(ApiError):
    """5xx: the server failed, or the deployment is starting or stopping (503)."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    404: NotFound,
    409: Conflict,
    422: BadRequest,
    424: TaskFailed,
}


def error_for_status(status: int, body: Any, text: str = "") -> ApiError:
    """The error for an HTTP error answer; ``body`` is its parsed JSON (or None), ``text`` its raw text."""
    detail: Any = body.get("detail") if isinstance(body, dict) else None
    if detail is None:
        detail = text.strip() or f"HTTP {status}"
    elif not isinstance(detail, str):
        detail = _describe(detail)
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else ApiError)
    return cls(status, detail, body)


def _describe(detail: Any) -> str:
    """Pydantic's validation errors (a list of dicts) as one readable line."""
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict) and "msg" in item:
                where = ".".join(str(p) for p in item.get("loc", ()))
                parts.append(f"{where}: {item['msg']}" if where else str(item["msg"]))
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return str(detail)
