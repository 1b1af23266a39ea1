"""An in-memory llamactl API whose change feed reports tasks finishing at a chosen rate.

``python -m bench.tui_latency --synthetic RATE`` opens the dashboard on it, to measure the dashboard
at rates the server of a shared 2-core machine cannot reach. Each task is three changes, as on a
real server: ``session.created``, ``task.status`` queued, ``task.status`` completed. The API runs in
the dashboard's own process and event loop (an httpx transport), so its cost counts against the
dashboard's figures: they are upper bounds.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx

from llamactl.client import AsyncClient

__all__ = ["SyntheticDeployment"]

_FRAMES_PER_TICK = 15_000
_TICK = 0.01


class _Stream(httpx.AsyncByteStream):
    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._chunks:
            yield chunk


class SyntheticDeployment:
    """Deployment ``name`` with one service, ``echo``; :meth:`start` makes tasks finish at ``rate``/s."""

    def __init__(self, rate: float, name: str = "bench") -> None:
        self.rate = rate
        self.name = name
        self.seq = 0
        self.finished = 0
        self._started: float | None = None
        self._base = 0

    def start(self) -> None:
        self._started = time.monotonic()
        self._base = self.finished

    def stop(self) -> None:
        self._started = None

    def client(self) -> AsyncClient:
        return AsyncClient("http://synthetic.invalid", transport=httpx.MockTransport(self._handle))

    def _due(self) -> int:
        if self._started is None:
            return 0
        return self._base + int((time.monotonic() - self._started) * self.rate) - self.finished

    def _frame(self, kind: str, data: dict[str, Any]) -> bytes:
        change = {"kind": kind, "deployment": self.name, "data": data, "at": time.time(), "seq": self.seq}
        frame = f"id: {self.seq}\nevent: {kind}\ndata: {json.dumps(change)}\n\n".encode()
        self.seq += 1
        return frame

    async def _changes(self) -> AsyncIterator[bytes]:
        yield b"retry: 1000\n\n"
        while True:
            frames: list[bytes] = []
            for _ in range(min(self._due(), _FRAMES_PER_TICK // 3)):
                n = self.finished
                self.finished += 1
                task = {"task_id": f"task-{n:09d}", "session_id": f"session-{n:09d}", "service_id": "echo"}
                frames.append(self._frame("session.created", {"session_id": task["session_id"]}))
                frames.append(self._frame("task.status", {**task, "status": "queued", "attempts": 0}))
                done = {**task, "status": "completed", "attempts": 1, "replica_id": "echo#1", "error": None}
                frames.append(self._frame("task.status", done))
            if frames:
                yield b"".join(frames)
            await asyncio.sleep(_TICK)

    def _record(self, task_id: str) -> dict[str, Any]:
        now = time.time()
        session = task_id.replace("task-", "session-")
        return {
            "task_id": task_id,
            "deployment": self.name,
            "service_id": "echo",
            "session_id": session,
            "status": "completed",
            "attempts": 1,
            "replica_id": "echo#1",
            "created_at": now,
            "started_at": now,
            "finished_at": now,
            "result": "Message received: hi",
        }

    def _state(self) -> dict[str, Any]:
        counts = {"queued": 0, "running": 0, "completed": self.finished, "failed": 0, "cancelled": 0}
        replica = {"replica_id": "echo#1", "service_id": "echo", "state": "ready", "max_concurrency": 64}
        service = {"service_id": "echo", "name": "Echo", "replicas": [replica]}
        return {
            "deployment": self.name,
            "services": [service],
            "sessions": self.finished,
            "tasks": counts,
            "service_tasks": {"echo": counts},
            "recent_tasks": [],
            "changes_seq": self.seq,
        }

    def _handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        base = f"/deployments/{self.name}"
        sse = {"content-type": "text/event-stream"}
        if path == "/deployments/":
            return httpx.Response(200, json=[{"name": self.name}])
        if path == f"{base}/state":
            return httpx.Response(200, json=self._state())
        if path in (f"{base}/tasks", f"{base}/sessions"):
            return httpx.Response(200, json=[])
        if path == f"{base}/services":
            return httpx.Response(200, json=self._state()["services"])
        if path == f"{base}/dashboard/contexts":
            ids = request.url.params.get_list("session_id")
            return httpx.Response(200, json={"contexts": dict.fromkeys(ids, 512)})
        if path == f"{base}/changes":
            return httpx.Response(200, headers=sse, stream=_Stream(self._changes()))
        if path.startswith(f"{base}/tasks/"):
            task_id, _, rest = path.removeprefix(f"{base}/tasks/").partition("/")
            if rest == "events":
                stop = {
                    "value": {"result": "Message received: hi"},
                    "type": "StopEvent",
                    "qualified_name": "workflows.events.StopEvent",
                    "seq": 0,
                    "attempt": 1,
                }
                body = f"id: 0\nevent: StopEvent\ndata: {json.dumps(stop)}\n\n"
                body += 'event: end\ndata: {"status": "completed"}\n\n'
                return httpx.Response(200, headers=sse, text=body)
            return httpx.Response(200, json=self._record(task_id))
        return httpx.Response(404, json={"detail": f"no route {path}"})
