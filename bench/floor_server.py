"""The floor: a bare endpoint that forwards each request to a worker process over ZeroMQ.

``python -m bench.floor_server [--workers N]`` serves the same ``POST /echo`` and
``POST /workflow`` as :mod:`bench.baseline_server`, and ``POST /cpu`` (the anchor's ~5 ms CPU
step), but the handler only forwards the request body over one DEALER socket (``ipc://``) to a
worker subprocess (with ``--workers N``, to N of them in turn: ZeroMQ's DEALER deals round robin),
which runs the echo function or the workflow and sends the JSON answer back. Nothing is stored,
nothing is acked, no Context is saved: this is the least any design pays that runs user code in a
separate process, so it bounds from below what llamactl's full path (state store, journal,
leases, reports) can reach on this machine. Its workers run the workflows as llamactl's do
(:func:`~llamactl.server.services.workflow_runs.prepare_workflow`: each workflow's steps looked up
once, not by the ``workflows`` library on every run), so the floor pays nothing that llamactl's
design does not.

With ``--transport unix`` the hop goes over a Unix socket that each process's event loop drives
itself, instead of ZeroMQ with its I/O threads (:mod:`bench.floor_unix`; compare them with
``python -m bench.transport``).

With ``--durable`` it is the *durable floor*: the handler also stores the task before forwarding
it and its answer before answering (:mod:`bench.floor_store`), the least a design writes that
loses no task. Between the two, what durability costs at the least; above the durable floor,
what the rest of a design costs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
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
from bench.floor_store import FloorStore
from bench.floor_unix import UnixForwarder, work
from bench.services import cpu_workflow, echo, echo_workflow
from llamactl.server.services.workflow_runs import prepare_workflow
from llamactl.server.supervisor import death_signal_hook

__all__ = ["main"]

_FUNCTION, _WORKFLOW, _CPU, _READY = b"f", b"w", b"c", b"ready"
_WORKFLOWS = {_WORKFLOW: echo_workflow, _CPU: cpu_workflow}


class _Forwarder:
    """One DEALER socket to the workers (dealt in turn); replies matched to requests by a counter."""

    def __init__(self, sock: zmq.asyncio.Socket, workers: int) -> None:
        self._sock = sock
        self._next = 0
        self._waiting: dict[bytes, asyncio.Future[bytes]] = {}
        self._unready = workers
        self.ready = False

    async def call(self, kind: bytes, body: bytes) -> bytes:
        self._next += 1
        ident = self._next.to_bytes(8, "little")
        answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting[ident] = answer
        await self._sock.send_multipart([ident, kind, body])
        return await answer

    async def read_replies(self) -> None:
        while self._unready:
            hello = await self._sock.recv_multipart()
            if hello != [_READY]:
                raise RuntimeError(f"a floor worker said {hello!r} instead of {_READY!r}")
            self._unready -= 1
        self.ready = True
        while True:
            ident, answer = await self._sock.recv_multipart()
            waiter = self._waiting.pop(ident, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(answer)


def _app(forwarder: _Forwarder | UnixForwarder, store: FloorStore | None) -> Starlette:
    kinds = {"/echo": _FUNCTION, "/workflow": _WORKFLOW, "/cpu": _CPU}

    async def forward(request: Request) -> Response:
        kind, body = kinds[request.url.path], await request.body()
        if store is None:
            answer = await forwarder.call(kind, body)
        else:
            task_id = await store.queued(body)
            answer = await forwarder.call(kind, body)
            await store.finished(task_id, answer)
        return Response(answer, media_type="application/json")

    return Starlette(routes=[Route(path, forward, methods=["POST"]) for path in kinds])


@contextlib.asynccontextmanager
async def _workers(address: str, n: int) -> AsyncIterator[None]:
    argv = [sys.executable, "-m", "bench.floor_server", "--worker", address]
    procs: list[asyncio.subprocess.Process] = []
    try:
        for _ in range(n):
            procs.append(
                await asyncio.create_subprocess_exec(*argv, preexec_fn=death_signal_hook(os.getpid()))
            )
        yield
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        for proc in procs:
            await proc.wait()


async def _serve_forwarding(workers: int, durable: bool, transport: str) -> None:
    with tempfile.TemporaryDirectory(prefix="llamactl-floor-") as tmp:
        store = FloorStore(Path(tmp) / "tasks.db") if durable else None
        try:
            if transport == "unix":
                await _serve_unix(Path(tmp) / "worker.sock", workers, store)
            else:
                await _serve_zeromq(f"ipc://{Path(tmp) / 'worker'}", workers, store)
        finally:
            if store is not None:
                store.close()


async def _serve_zeromq(address: str, workers: int, store: FloorStore | None) -> None:
    ctx = zmq.asyncio.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.bind(address)
    forwarder = _Forwarder(sock, workers)
    replies = asyncio.create_task(forwarder.read_replies())
    try:
        async with _workers(address, workers):
            while not forwarder.ready:  # listen only once every worker answers
                if replies.done():
                    await replies
                await asyncio.sleep(0.005)
            await serve(_app(forwarder, store))
    finally:
        replies.cancel()
        sock.close(linger=0)
        ctx.term()


async def _serve_unix(path: Path, workers: int, store: FloorStore | None) -> None:
    forwarder = UnixForwarder(workers)
    await forwarder.start(str(path))
    try:
        async with _workers(f"unix:{path}", workers):
            async with asyncio.timeout(60):  # listen only once every worker is connected
                await forwarder.connected.wait()
            await serve(_app(forwarder, store))
    finally:
        forwarder.close()


async def _run(kind: bytes, body: bytes) -> Any:
    kwargs = json.loads(json.loads(body).get("input") or "{}")
    if kind == _FUNCTION:
        return await echo(**kwargs)
    return await _WORKFLOWS[kind].run(**kwargs)


async def _answer(kind: bytes, body: bytes) -> bytes:
    return json.dumps(await _run(kind, body)).encode()


def prepare_workflows() -> None:
    """Run the floor's workflows as llamactl's workers run theirs (``prepare_workflow``), so that
    the floor pays nothing for the ``workflows`` library that llamactl's design avoids."""
    for workflow in _WORKFLOWS.values():
        prepare_workflow(workflow)


async def _work(address: str) -> None:
    prepare_workflows()
    if address.startswith("unix:"):
        await work(address.removeprefix("unix:"), _answer)
        return
    ctx = zmq.asyncio.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.connect(address)
    await sock.send_multipart([_READY])

    async def answer(ident: bytes, kind: bytes, body: bytes) -> None:
        await sock.send_multipart([ident, await _answer(kind, body)])

    running: set[asyncio.Task[None]] = set()
    while True:
        ident, kind, body = await sock.recv_multipart()
        task = asyncio.create_task(answer(ident, kind, body))
        running.add(task)
        task.add_done_callback(running.discard)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.floor_server", description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=1, help="worker processes, dealt in turn (default 1)")
    parser.add_argument(
        "--durable",
        action="store_true",
        help="store each task before forwarding it and its answer before answering (the durable floor)",
    )
    parser.add_argument(
        "--transport",
        choices=("zeromq", "unix"),
        default="zeromq",
        help="the hop to the workers: ZeroMQ over ipc:// (default), or a Unix socket the loops drive",
    )
    parser.add_argument("--worker", metavar="ADDRESS", help=argparse.SUPPRESS)  # be a worker instead
    return parser


def main(argv: list[str] | None = None) -> None:
    """Serve until SIGINT/SIGTERM (``--workers N``: forward to N workers, default 1; ``--durable``:
    store each task and its answer; ``--transport unix``: over a Unix socket instead of ZeroMQ);
    with ``--worker ADDRESS``, be a worker instead."""
    import uvloop  # noqa: PLC0415

    parser = _parser()
    args = parser.parse_args(argv)
    if args.worker is not None:
        with contextlib.suppress(KeyboardInterrupt):
            uvloop.run(_work(args.worker))
        return
    if args.workers < 1:
        parser.error(f"--workers {args.workers}: give at least 1")
    uvloop.run(_serve_forwarding(args.workers, args.durable, args.transport))


if __name__ == "__main__":
    main()
