"""Event streams: a task's events as NDJSON or SSE, and a deployment's change feed as SSE.

SSE frames carry ``id: <seq>`` so a client that reconnects with ``Last-Event-ID`` resumes right
after the last event it saw; ``: keepalive`` comments keep idle connections (and proxies) alive.
The change feed also carries ``health`` frames, without an id: this server's view of the
deployment's queue and store when it changes (a store refusing writes cannot log it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

from starlette.requests import Request
from starlette.responses import StreamingResponse

from llamactl.server.aio import cancel_and_wait
from llamactl.server.control_plane import ControlPlane
from llamactl.server.errors import LlamactlError
from llamactl.server.types import ChangeEvent, EventEnvelope

__all__ = [
    "change_feed_sse",
    "sse_frame",
    "task_events_ndjson",
    "task_events_sse",
    "wants_sse",
    "with_keepalive",
]

T = TypeVar("T")

KEEPALIVE = b": keepalive\n\n"
HEALTH_CHECK = 1.0
"""Seconds between looks at the backends' health while a change feed is idle."""
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def wants_sse(request: Request) -> bool:
    return "text/event-stream" in request.headers.get("accept", "")


def sse_frame(event: str, data: str, event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {data}\n\n".encode()


async def with_keepalive(
    source: AsyncIterator[T], interval: float, stop: asyncio.Event | None = None
) -> AsyncIterator[T | None]:
    """The items of ``source``, and None whenever ``interval`` seconds pass without one.

    Ends when ``source`` does or when ``stop`` is set (the server is shutting down).
    """
    pending: asyncio.Future[T] | None = None
    stopped = asyncio.ensure_future(stop.wait()) if stop is not None else None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(source))
            waiting: set[asyncio.Future[object]] = {pending}  # type: ignore[arg-type]
            if stopped is not None:
                waiting.add(stopped)  # type: ignore[arg-type]
            done, _ = await asyncio.wait(waiting, timeout=interval, return_when=asyncio.FIRST_COMPLETED)
            if pending not in done:
                if stopped is not None and stopped in done:
                    return
                yield None
                continue
            future, pending = pending, None
            try:
                item = future.result()
            except StopAsyncIteration:
                return
            yield item
    finally:
        for leftover in (pending, stopped):
            if leftover is not None and not leftover.done():
                with contextlib.suppress(StopAsyncIteration):
                    await cancel_and_wait(leftover)
        aclose = getattr(source, "aclose", None)
        if aclose is not None:
            await aclose()


def _ndjson_line(envelope: EventEnvelope, raw_event: bool) -> bytes:
    if raw_event:
        value = {"__is_pydantic": True, "value": envelope.value, "qualified_name": envelope.qualified_name}
    else:
        value = envelope.value
    return json.dumps(value, ensure_ascii=False).encode() + b"\n"


def task_events_ndjson(
    cp: ControlPlane, task_id: str, from_seq: int, raw_event: bool, stop: asyncio.Event
) -> StreamingResponse:
    """One JSON line per event until the task has finished (Llama Deploy's stream)."""

    async def lines() -> AsyncIterator[bytes]:
        # NDJSON has no comment syntax: the keepalive ticks are dropped, they only let us see `stop`.
        with contextlib.suppress(LlamactlError):
            async for batch in with_keepalive(cp.task_event_batches(task_id, from_seq), 1.0, stop):
                if batch is not None:
                    yield b"".join(_ndjson_line(envelope, raw_event) for envelope in batch)

    return StreamingResponse(lines(), media_type="application/x-ndjson")


def task_events_sse(
    cp: ControlPlane, task_id: str, from_seq: int, keepalive: float, stop: asyncio.Event
) -> StreamingResponse:
    """SSE: ``id: <seq>``, ``event: <type>``, ``data: <EventEnvelope>``; ``event: end`` last."""

    async def frames() -> AsyncIterator[bytes]:
        try:
            events = cp.task_event_batches(task_id, from_seq)
            async for batch in with_keepalive(events, keepalive, stop):
                if batch is None:
                    yield KEEPALIVE
                else:  # one write per batch, as the change feed's
                    yield b"".join(sse_frame(e.type, e.model_dump_json(), e.seq) for e in batch)
            if stop.is_set():
                return
            task = await cp.get_task(task_id)
        except LlamactlError:
            return  # the deployment went away under the stream
        end = {"task_id": task_id, "status": task.status.value, "error": task.error}
        yield sse_frame("end", json.dumps(end))

    return StreamingResponse(frames(), media_type="text/event-stream", headers=_SSE_HEADERS)


def change_feed_sse(
    cp: ControlPlane,
    from_seq: int,
    keepalive: float,
    stop: asyncio.Event,
    backends: Callable[[], dict[str, dict[str, object]]],
) -> StreamingResponse:
    """SSE of the change feed from ``from_seq`` on; it ends only with the deployment or the server.

    ``backends()`` (:meth:`Deployment.backends`) is looked at after every batch and every
    ``HEALTH_CHECK`` seconds: a ``health`` frame (a ChangeEvent of kind ``health``, ``seq`` -1)
    goes out at the start when a backend is unreachable, and whenever one's outage begins or ends.
    """

    async def frames() -> AsyncIterator[bytes]:
        yield b"retry: 1000\n\n"
        shown: tuple[object, ...] = ()  # the outages sent last (none at first)
        sent = time.monotonic()

        def health() -> bytes:
            nonlocal shown
            now = backends()
            outages = tuple(
                (key, b["state"], b["unreachable_since"]) for key, b in now.items() if not b["reachable"]
            )
            if outages == shown:
                return b""
            shown = outages
            change = ChangeEvent(kind="health", deployment=cp.deployment, data=now, seq=-1)
            return sse_frame("health", change.model_dump_json())

        if start := health():
            yield start
        with contextlib.suppress(LlamactlError):
            follow = cp.changes.follow(from_seq, poll=keepalive)
            async for batch in with_keepalive(follow, min(keepalive, HEALTH_CHECK), stop):
                # one write per batch: a busy feed costs one send, not one per change
                frame = health()
                if batch is not None:
                    frame += b"".join(sse_frame(c.kind, c.model_dump_json(), c.seq) for c in batch)
                elif not frame and time.monotonic() - sent >= keepalive:
                    frame = KEEPALIVE
                if frame:
                    sent = time.monotonic()
                    yield frame

    return StreamingResponse(frames(), media_type="text/event-stream", headers=_SSE_HEADERS)
