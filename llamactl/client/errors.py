"""Every error the client raises.

The tree::

    ClientError                 base of every client error; `str(err)` is meant for a user
    ├── InvalidServerUrl        the server's URL is not an http(s) URL
    ├── ServerUnreachable       no llamactl server answers at the URL (not started, wrong URL or port)
    │   └── NotLlamactlServer   something answers there, but not a llamactl server (not HTTP, an HTML page)
    ├── StreamBroken            an event stream dropped and could not be resumed
    └── ApiError                the server answered with an error status; `.status`, `.detail`
        ├── BadRequest          400, 422: a bad deployment file, bad input, a malformed event
        ├── Unauthorized        401: a token is required and was missing or wrong
        ├── Forbidden           403: the server's policy refuses it (a folder outside its roots, an install)
        ├── NotFound            404: an unknown deployment, service, session or task
        ├── Conflict            409: the deployment exists, or the task has already finished
        ├── TaskFailed          424: `tasks.run` only: the task failed or was cancelled
        ├── Overloaded          429: the service's queue is full; `.retry_after` seconds
        └── ServerError         5xx: the server failed (503: the deployment is starting or stopping)
            ├── ServerStopping  503: the server is stopping (it drains its running tasks, then exits)
            ├── DeploymentStarting 503: the deployment's services are still loading: try again soon
            ├── DeploymentDeleting 503: the deployment is being deleted: it takes no new tasks
            ├── BackendUnavailable 503: its state store or message queue failed the request: try again soon
            └── WaitTimeout     504: the task did not finish within the server's wait; it goes on

This module imports nothing but the standard library, so a CLI can name these classes cheaply.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "ApiError",
    "BackendUnavailable",
    "BadRequest",
    "ClientError",
    "Conflict",
    "DeploymentDeleting",
    "DeploymentStarting",
    "Forbidden",
    "InvalidServerUrl",
    "NotFound",
    "NotLlamactlServer",
    "Overloaded",
    "ServerError",
    "ServerStopping",
    "ServerUnreachable",
    "StreamBroken",
    "TaskFailed",
    "Unauthorized",
    "WaitTimeout",
    "error_for_status",
]


class ClientError(Exception):
    """Base class of every error the client raises."""


class InvalidServerUrl(ClientError, ValueError):
    """The server's URL is not one the client can use (``http://HOST:PORT`` is)."""


class ServerUnreachable(ClientError):
    """No llamactl server answers at the server's URL.

    Attributes:
        url: the server's URL.
        reason: what happened, e.g. ``connection refused``.
        sent: the request reached a server before the connection broke off (so what it asked
            may have happened: a task it created may run), rather than finding nobody there.
    """

    def __init__(self, url: str, reason: str = "", *, sent: bool = False) -> None:
        self.url = url
        self.reason = reason
        self.sent = sent
        super().__init__(f"no server answers at {url}" + (f" ({reason})" if reason else ""))


class NotLlamactlServer(ServerUnreachable):
    """Something answers at the server's URL, but it is not a llamactl server (``reason`` says how
    it answered: not HTTP at all, an HTML page, JSON of another shape)."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(url, reason)
        self.args = (f"{url} is not a llamactl server: {reason}",)


class StreamBroken(ClientError):
    """An event stream dropped and every attempt to resume it failed."""


class ApiError(ClientError):
    """The server answered with an error status.

    Attributes:
        status: the HTTP status code.
        detail: the server's explanation (the ``detail`` of its JSON body).
        body: the whole JSON body, when there was one.
        url: the server's URL (scheme, host and port), when known.
    """

    def __init__(self, status: int, detail: str, body: Any = None) -> None:
        self.status = status
        self.detail = detail
        self.body = body
        self.url: str | None = None
        super().__init__(detail)


class BadRequest(ApiError):
    """400 or 422: the request was malformed or its content invalid."""


class Unauthorized(ApiError):
    """401: the server needs a token (``LLAMACTL_API_TOKEN``) and got none or a wrong one."""


class Forbidden(ApiError):
    """403: the server was not started to allow this (a deployment folder outside its
    ``--deployments-root`` folders, python-dependencies without ``--allow-install``, a web page)."""


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


class Overloaded(ApiError):
    """429: the service has as many tasks waiting as its queue holds.

    Attributes:
        retry_after: seconds the server asks the caller to wait before trying again.
    """

    def __init__(self, status: int, detail: str, body: Any = None, retry_after: float = 1.0) -> None:
        super().__init__(status, detail, body)
        self.retry_after = retry_after


class ServerError(ApiError):
    """5xx: the server failed, or the deployment is starting or stopping (503).

    Attributes:
        task_id: the task the caller waited for, when the answer names one.
        task_status: that task's status when the server answered.
    """

    def __init__(self, status: int, detail: str, body: Any = None) -> None:
        super().__init__(status, detail, body)
        fields = body if isinstance(body, dict) else {}
        self.task_id: str | None = fields.get("task_id")
        self.task_status: str | None = fields.get("status")


class ServerStopping(ServerError):
    """503: the server is stopping: it lets its running tasks finish, then exits. A caller that
    waited for a task learns which (``task_id``, ``task_status``): it goes on once the server is back."""


class DeploymentStarting(ServerError):
    """503: the deployment is still starting (its services load their code); nothing was done,
    and the same request may be sent again once it is up."""


class DeploymentDeleting(ServerError):
    """503: the deployment is being deleted: it takes no new tasks while its running ones finish,
    then it is gone (deploy it again to send it tasks)."""


class BackendUnavailable(ServerError):
    """503: the deployment's state store or message queue (``backend``: ``"state_store"``,
    ``"message_queue"``) failed the request, as when its server is down or unreachable; nothing
    was kept, and the same request may be sent again (``GET /status/`` says what is unreachable).
    """

    def __init__(self, status: int, detail: str, body: Any = None) -> None:
        super().__init__(status, detail, body)
        self.backend: str = str(body.get("unavailable")) if isinstance(body, dict) else ""


class WaitTimeout(ServerError):
    """504: the task did not finish within the server's wait (``task_id``, ``task_status``); it goes on."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    422: BadRequest,
    424: TaskFailed,
}


def error_for_status(
    status: int, body: Any, text: str = "", headers: Mapping[str, str] | None = None
) -> ApiError:
    """The error for an HTTP error answer; ``body`` is its parsed JSON (or None), ``text`` its raw text."""
    detail: Any = body.get("detail") if isinstance(body, dict) else None
    if detail is None:
        detail = text.strip() or f"HTTP {status}"
    elif not isinstance(detail, str):
        detail = _describe(detail)
    if status == 429:
        return Overloaded(status, detail, body, _seconds((headers or {}).get("retry-after")))
    if status == 503 and isinstance(body, dict) and body.get("unavailable"):
        return BackendUnavailable(status, detail, body)
    if status == 503 and _is_stopping(body):
        return ServerStopping(status, detail, body)
    if status == 503 and isinstance(body, dict) and body.get("state") == "starting":
        return DeploymentStarting(status, detail, body)
    if status == 503 and isinstance(body, dict) and body.get("state") == "deleting":
        return DeploymentDeleting(status, detail, body)
    if status == 504:
        return WaitTimeout(status, detail, body)
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else ApiError)
    return cls(status, detail, body)


def _is_stopping(body: Any) -> bool:
    """A 503 of a server that stops: its drain answer (``"stopping": true``), or a waiter's answer
    naming its task (the server woke it because it is about to stop)."""
    return isinstance(body, dict) and (body.get("stopping") is True or "task_id" in body)


def _seconds(value: str | None) -> float:
    try:
        return max(0.0, float(value)) if value is not None else 1.0
    except ValueError:
        return 1.0


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
