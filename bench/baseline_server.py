"""The baseline: a bare Starlette app on uvicorn (uvloop + httptools, no access log).

``python -m bench.baseline_server`` binds 127.0.0.1 on a free port and prints
``Listening on http://127.0.0.1:PORT`` on stderr once it accepts connections.

* ``POST /echo`` with ``{"input": "{\\"message\\": \\"hi\\"}", ...}`` answers ``"Message received: hi"``,
  parsing the body as the task endpoint does;
* ``POST /workflow`` runs the same echo ``Workflow`` inside the handler and answers its result.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bench.services import echo, echo_workflow

__all__ = ["app", "main", "serve"]


async def _kwargs(request: Request) -> dict[str, Any]:
    body = await request.json()
    kwargs: dict[str, Any] = json.loads(body.get("input") or "{}")
    return kwargs


async def echo_endpoint(request: Request) -> JSONResponse:
    """The plain function, called in the handler."""
    return JSONResponse(await echo(**await _kwargs(request)))


async def workflow_endpoint(request: Request) -> JSONResponse:
    """The echo workflow, run in the handler."""
    result = await echo_workflow.run(**await _kwargs(request))
    return JSONResponse(result)


app = Starlette(
    routes=[
        Route("/echo", echo_endpoint, methods=["POST"]),
        Route("/workflow", workflow_endpoint, methods=["POST"]),
    ]
)


async def serve(app: Starlette) -> None:
    """Serve ``app`` on a free loopback port; print the Listening line once it accepts."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, loop="none", http="httptools", access_log=False, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if serving.done():
            await serving
            return
        await asyncio.sleep(0.005)
    print(f"Listening on http://127.0.0.1:{port}", file=sys.stderr, flush=True)
    await serving


def main() -> None:
    """Serve until SIGINT/SIGTERM (uvicorn's handlers stop it gracefully)."""
    import uvloop  # noqa: PLC0415

    uvloop.run(serve(app))


if __name__ == "__main__":
    main()
