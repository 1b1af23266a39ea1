"""The floor: a bare endpoint that forwards each request to a worker process over ZeroMQ.

``python -m bench.floor_server`` serves the same ``POST /echo`` and ``POST /workflow`` as
:mod:`bench.baseline_server`, but the handler only forwards the request body over one DEALER
socket (``ipc://``) to a worker subprocess, which runs the echo function or the echo workflow and
sends the JSON answer back. Nothing is stored, nothing is acked, no Context is saved: this is
the least any design pays that runs user code in a separate process, so it bounds from below
what llamactl's full path (state store, journal, leases, reports) can reach on this machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench.baseline_server import serve
from bench.services import echo, echo_workflow

__all__ = ["main"]

_FUNCTION, _WORKFLOW, _READY = b"f", b"w", b"ready"


class _Forwarder:
    """One DEALER socket to the worker; replies matched to requests by a counter."""

    def __init__(self, sock: zmq.asyncio.Socket) -> None:
        self._sock = sock
        self._next = 0
        self._waiting: dict[bytes, asyncio.Future[bytes]] = {}
        self.ready = False

    async def call(self, kind: bytes, body: bytes) -> bytes:
        self._next += 1
        ident = self._next.to_bytes(8, "little")
        answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting[ident] = answer
        await self._sock.send_multipart([ident, kind, body])
        return await answer

    async def read_replies(self) -> None:
        hello = await self._sock.recv_multipart()
        if hello != [_READY]:
            raise RuntimeError(f"the floor worker said {hello!r} instead of {_READY!r}")
        self.ready = True
        while True:
            ident, answer = await self._sock.recv_multipart()
            waiter = self._waiting.pop(ident, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(answer)


def _app(forwarder: _Forwarder) -> Starlette:
    kinds = {"/echo": _FUNCTION, "/workflow": _WORKFLOW}

    async def forward(request: Request) -> Response:
        answer = await forwarder.call(kinds[request.url.path], await request.body())
        return Response(answer, media_type="application/json")

    return Starlette(routes=[Route(path, forward, methods=["POST"]) for path in kinds])


@contextlib.asynccontextmanager
async def _worker(address: str) -> AsyncIterator[None]:
    argv = [sys.executable, "-m", "bench.floor_server", "--worker", address]
    proc = await asyncio.create_subprocess_exec(*argv)
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        await proc.wait()


async def _serve_forwarding() -> None:
    with tempfile.TemporaryDirectory(prefix="llamactl-floor-") as tmp:
        address = f"ipc://{Path(tmp) / 'worker'}"
        ctx = zmq.asyncio.Context()
        sock = ctx.socket(zmq.DEALER)
        sock.bind(address)
        forwarder = _Forwarder(sock)
        replies = asyncio.create_task(forwarder.read_replies())
        try:
            async with _worker(address):
                while not forwarder.ready:  # listen only once the worker answers
                    if replies.done():
                        await replies
                    await asyncio.sleep(0.005)
                await serve(_app(forwarder))
        finally:
            replies.cancel()
            sock.close(linger=0)
            ctx.term()


async def _run(kind: bytes, body: bytes) -> Any:
    kwargs = json.loads(json.loads(body).get("input") or "{}")
    if kind == _FUNCTION:
        return await echo(**kwargs)
    return await echo_workflow.run(**kwargs)


async def _work(address: str) -> None:
    ctx = zmq.asyncio.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.connect(address)
    await sock.send_multipart([_READY])

    async def answer(ident: bytes, kind: bytes, body: bytes) -> None:
        await sock.send_multipart([ident, json.dumps(await _run(kind, body)).encode()])

    running: set[asyncio.Task[None]] = set()
    while True:
        ident, kind, body = await sock.recv_multipart()
        task = asyncio.create_task(answer(ident, kind, body))
        running.add(task)
        task.add_done_callback(running.discard)


def main() -> None:
    """Serve until SIGINT/SIGTERM; with ``--worker ADDRESS``, be the worker instead."""
    import uvloop  # noqa: PLC0415

    if sys.argv[1:2] == ["--worker"]:
        with contextlib.suppress(KeyboardInterrupt):
            uvloop.run(_work(sys.argv[2]))
        return
    uvloop.run(_serve_forwarding())


if __name__ == "__main__":
    main()
