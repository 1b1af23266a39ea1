"""Every error the API answers is JSON ``{"detail": ...}`` with the status of docs/http-api.md.

The engine's exception tree maps to statuses here, once, so routes just raise. Anything that
is not an error on purpose is a bug: the client gets a generic 500 and the traceback is logged.

The API adds a few refusals of its own under the engine's ``InvalidRequest``::

    InvalidRequest                    400
    ├── Forbidden                     403: the server's policy refuses it (a folder, an install)
    ├── BodyTooLarge                  413: the body is over --max-body-size
    ├── UnsupportedMediaType          415: a JSON route got another Content-Type
    └── UnprocessableBody             422: the JSON body does not match the model (FastAPI's shape)
"""

from __future__ import annotations

import json
import logging
from typing import Any

from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llamactl.server.deployment.manager import DeploymentUnavailable
from llamactl.server.errors import (
    Conflict,
    DeploymentConfigError,
    InvalidRequest,
    LlamactlError,
    MessageQueueError,
    NotFound,
    Overloaded,
    ShuttingDown,
    StateStoreDamaged,
    StateStoreError,
    TaskWaitTimeout,
    WorkerNoAnswer,
    WorkflowLoadError,
)

__all__ = [
    "BodyTooLarge",
    "CatchAllMiddleware",
    "Forbidden",
    "UnprocessableBody",
    "UnsupportedMediaType",
    "error_response",
    "exception_handlers",
    "status_for",
]

log = logging.getLogger("llamactl.server.apiserver")


class Forbidden(InvalidRequest):
    """The request is well formed but the server was not started to allow it."""


class BodyTooLarge(InvalidRequest):
    """The request body is larger than the server accepts."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"the request body is larger than {limit} bytes, the most this server accepts: "
            "send less, or start the server with a larger --max-body-size"
        )
        self.limit = limit


class UnsupportedMediaType(InvalidRequest):
    """The body is not of a type the route reads."""


class UnprocessableBody(InvalidRequest):
    """The JSON body does not match the route's model; ``errors`` is FastAPI's list of problems."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        first = errors[0]["msg"] if errors else "invalid body"
        super().__init__(f"the request body does not match the model: {first}")
        self.errors = errors


_STATUSES: tuple[tuple[type[BaseException], int], ...] = (
    (Forbidden, 403),
    (BodyTooLarge, 413),
    (UnsupportedMediaType, 415),
    (UnprocessableBody, 422),
    (NotFound, 404),
    (Conflict, 409),
    (DeploymentUnavailable, 503),
    (Overloaded, 429),
    (ShuttingDown, 503),
    (TaskWaitTimeout, 504),
    (WorkerNoAnswer, 504),
    (InvalidRequest, 400),
    (DeploymentConfigError, 400),
    (WorkflowLoadError, 400),
    (StateStoreError, 503),
    (MessageQueueError, 503),
)


def status_for(exc: BaseException) -> int:
    """The HTTP status for an engine error (500 for anything unexpected)."""
    for kind, status in _STATUSES:
        if isinstance(exc, kind):
            return status
    return 500


def error_response(status_code: int, detail: Any, **extra: Any) -> Response:
    """A JSON error answer: ``{"detail": ..., **extra}``."""
    body = json.dumps({"detail": detail, **extra}).encode()
    return Response(body, status_code=status_code, media_type="application/json")


async def _engine_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, UnprocessableBody):
        return error_response(422, exc.errors)
    # A caller that waited for a task learns which one and where it stands, so it can follow it
    # instead of sending it again.
    # ``state``: "starting" (a client may wait for it: `llamactl run` does) or "deleting".
    extra = {k: v for k in ("task_id", "status", "state") if (v := getattr(exc, k, None)) is not None}
    detail = str(exc)
    if isinstance(exc, StateStoreDamaged):  # no retry mends it: the message says what does
        return error_response(503, detail, **extra)
    if isinstance(exc, StateStoreError | MessageQueueError):
        # Nothing of the request was kept: the caller may simply send it again (a client can tell
        # this 503 by ``unavailable``: which of the deployment's servers failed the request).
        if request.method in ("GET", "HEAD"):  # a read: nothing to keep, only to try again
            detail = f"the server cannot answer this right now ({exc}): try again in a moment"
        else:
            detail = (
                f"the server cannot record this right now ({exc}): nothing was kept, try again in a moment"
            )
        extra["unavailable"] = "state_store" if isinstance(exc, StateStoreError) else "message_queue"
    response = error_response(status_for(exc), detail, **extra)
    if isinstance(exc, Overloaded):
        response.headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    elif isinstance(exc, StateStoreError | MessageQueueError):
        response.headers["Retry-After"] = "1"
    return response


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ValidationError)
    errors = exc.errors(include_url=False, include_context=False)
    if errors and errors[0]["type"] == "json_invalid":
        return error_response(400, f"the request body is not valid JSON: {errors[0]['msg']}")
    # FastAPI's shape, so Llama Deploy's clients read it as they always did.
    return error_response(422, json.loads(exc.json(include_url=False, include_context=False)))


async def _json_error(request: Request, exc: Exception) -> Response:
    return error_response(400, f"the request body is not valid JSON: {exc}")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    detail = exc.detail
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"no route {request.method} {request.url.path}: see /docs for the API"
    elif exc.status_code == 405:
        detail = f"{request.method} is not allowed on {request.url.path}: see /docs for the API"
    response = error_response(exc.status_code, detail)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def _timeout(request: Request, exc: Exception) -> Response:
    return error_response(504, str(exc) or "the operation timed out: try again with a longer timeout")


exception_handlers: dict[Any, Any] = {
    LlamactlError: _engine_error,
    ValidationError: _validation_error,
    json.JSONDecodeError: _json_error,
    HTTPException: _http_error,
    TimeoutError: _timeout,
}


class CatchAllMiddleware:
    """Turn any unexpected exception into a generic JSON 500 and log its traceback once.

    A client that goes away while its body is still coming (an upload interrupted, a request
    timed out by :mod:`~llamactl.server.apiserver.http_protocol`) is no error of ours: there is
    nobody left to answer, and it is logged at debug level only."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except ClientDisconnect:
            log.debug(
                "%s %s: the client left before its request was read", scope.get("method"), scope.get("path")
            )
        except Exception:
            log.exception("unexpected error on %s %s", scope.get("method"), scope.get("path"))
            if started:
                return  # a stream broke mid-way: the client sees it end early
            response = error_response(
                500, "internal server error: this is a bug in llamactl, the server log has the details"
            )
            await response(scope, receive, send)
