"""Server-level routes: root, status, health, metrics, OpenAPI and its page."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route

from llamactl.server.apiserver.common import json_response, manager_of, model_response
from llamactl.server.apiserver.metrics import render_metrics
from llamactl.server.apiserver.openapi import docs_page, openapi_document
from llamactl.server.types import Status, StatusEnum

__all__ = ["routes"]


async def root(request: Request) -> Response:
    """Links to the API docs and the status."""
    base = str(request.base_url).rstrip("/")
    return json_response({"swagger_docs": f"{base}/docs", "status": f"{base}/status/"})


DOWN_NOTICE_AFTER = 5.0
"""Seconds a service goes without a ready worker before the status says so (a worker restarted
after a crash is back sooner)."""


async def status(request: Request) -> Response:
    """The server's status and its deployments (Llama Deploy's Status): Unhealthy, saying why,
    while a deployment's message queue or state store is unreachable, or one of its services has
    had no worker ready for a while (its code does not load, its workers keep exiting)."""
    manager = manager_of(request)
    troubles = [
        f"deployment '{d.name}': {outage.describe()}"
        for d in manager.running()
        for outage in (d.queue_outage, d.store_outage)
        if outage is not None
    ]
    troubles += [
        _down(d.name, service_id, seconds, error)
        for d in manager.running()
        for service_id, seconds, error in d.control_plane.registry.down(DOWN_NOTICE_AFTER)
    ]
    if troubles:
        message = "; ".join(troubles)
        return model_response(
            Status(status=StatusEnum.UNHEALTHY, status_message=message, deployments=manager.names())
        )
    return model_response(Status(status=StatusEnum.HEALTHY, deployments=manager.names()))


def _down(deployment: str, service_id: str, seconds: float, error: str | None) -> str:
    why = (
        error.splitlines()[0]
        if error
        else "its workers keep exiting or starting: the server's output says why"
    )
    down = f"service '{service_id}' has had no worker ready for {seconds:.0f} s"
    return f"deployment '{deployment}': {down} ({why})"


async def healthz(request: Request) -> Response:
    """Liveness: answers without a token."""
    return json_response({"status": "ok"})


async def metrics(request: Request) -> Response:
    """Prometheus text: tasks by deployment, service and status; ready replicas; uptime."""
    text = await render_metrics(manager_of(request), request.app.state.started_at)
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")


async def openapi(request: Request) -> Response:
    """The OpenAPI document of this API."""
    return json_response(openapi_document(request.app.routes))


async def docs(request: Request) -> Response:
    """A page that shows the OpenAPI document."""
    return HTMLResponse(docs_page("/openapi.json"))


routes = [
    Route("/", root, methods=["GET"]),
    Route("/status/", status, methods=["GET"]),
    Route("/healthz", healthz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"], include_in_schema=False),
    Route("/docs", docs, methods=["GET"], include_in_schema=False),
]
