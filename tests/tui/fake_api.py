"""A fixed, in-memory llamactl API (an httpx transport) for screenshots that must not change between runs.

Everything a live server makes up (ids, times, pids) is fixed here; the change feed stays open and
silent, so what the screenshot shows is exactly this data.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from llamactl.client import AsyncClient

T0 = 1_767_225_600.0
"""2026-01-01 00:00:00 UTC: every time below is counted from here."""
NOW = T0 + 300
"""The dashboard's clock in screenshots."""


def _replica(
    service: str, n: int, *, state: str = "ready", busy: int = 0, error: str | None = None
) -> dict[str, Any]:
    return {
        "replica_id": f"{service}#{n}",
        "service_id": service,
        "generation": 2 if service == "echo" else 1,
        "state": state,
        "pid": 4200 + n + len(service),
        "in_flight": busy,
        "max_concurrency": 8,
        "started_at": T0,
        "last_heartbeat": NOW - 2,
        "last_error": error,
    }


SERVICES = [
    {
        "service_id": "echo",
        "name": "Echo",
        "generation": 2,
        "replicas": [_replica("echo", 1), _replica("echo", 2, busy=1)],
        "desired_replicas": 2,
        "last_reload_at": NOW - 95,
    },
    {
        "service_id": "stream",
        "name": "Stream",
        "replicas": [_replica("stream", 1, busy=1)],
        "last_reload_at": NOW - 40,
        "last_reload_error": "stream: syntax error in /app/src/flows.py line 27: invalid syntax",
    },
    {
        "service_id": "hitl",
        "name": "Human in the loop",
        "replicas": [_replica("hitl", 1, busy=1)],
    },
    {
        "service_id": "boom",
        "name": "Boom",
        "replicas": [_replica("boom", 1, state="crashed", error="exit code 1")],
        "last_error": "importing 'flows' raised NameError: name 'oops' is not defined (at /app/src/flows.py:9)",
    },
]


def _task(n: int, service: str, status: str, **fields: Any) -> dict[str, Any]:
    created = T0 + 10 * n
    record: dict[str, Any] = {
        "task_id": f"{n:08x}-7a1e-4c2b-9d3f-00000000{n:04x}",
        "deployment": "demo",
        "service_id": service,
        "session_id": f"5e55{n % 3:04x}-0000-4000-8000-000000000000",
        "input": "{}",
        "status": status,
        "attempts": 1 if status != "queued" else 0,
        "replica_id": f"{service}#1" if status != "queued" else None,
        "created_at": created,
        "started_at": created + 0.2 if status != "queued" else None,
        "finished_at": created + 1.7 if status in ("completed", "failed", "cancelled") else None,
        "result": None,
        "error": None,
    }
    record.update(fields)
    return record


TASKS = [
    _task(1, "echo", "completed", result="Message received: hello"),
    _task(2, "stream", "completed", result=3),
    _task(3, "boom", "failed", error="ValueError: cannot handle 'x'"),
    _task(4, "echo", "cancelled", error="cancelled before it started"),
    _task(5, "stream", "completed", result=3, attempts=2, replica_id="stream#1"),
    _task(6, "echo", "completed", result="Message received: again"),
    _task(7, "hitl", "running"),
    _task(8, "echo", "queued"),
]
SHOWN = TASKS[4]["task_id"]
"""The task whose events the screenshots show (a retried stream task)."""
WAITING = TASKS[6]["task_id"]
"""A task that waits for a human."""

SESSIONS = [
    {"session_id": s, "task_ids": [t["task_id"] for t in TASKS if t["session_id"] == s], "state": {}}
    for s in dict.fromkeys(t["session_id"] for t in TASKS)
]


def _envelope(
    seq: int, type_: str, value: Any, attempt: int = 1, qualified: str | None = None
) -> dict[str, Any]:
    return {
        "value": value,
        "type": type_,
        "qualified_name": qualified or f"flows.{type_}",
        "seq": seq,
        "attempt": attempt,
    }


EVENTS: dict[str, list[dict[str, Any]]] = {
    SHOWN: [
        _envelope(0, "Progress", {"n": 0}),
        _envelope(
            1,
            "TaskAttempt",
            {"attempt": 2, "replica_id": "stream#1", "reason": "worker died"},
            2,
            "llamactl.TaskAttempt",
        ),
        _envelope(2, "Progress", {"n": 0}, 2),
        _envelope(3, "Progress", {"n": 1}, 2),
        _envelope(4, "Progress", {"n": 2}, 2),
        _envelope(5, "StopEvent", {"result": 3}, 2, "workflows.events.StopEvent"),
    ],
    WAITING: [
        _envelope(
            0,
            "InputRequiredEvent",
            {"prefix": "May I deploy to production? Answer yes or no."},
            qualified="workflows.events.InputRequiredEvent",
        ),
    ],
}


def state() -> dict[str, Any]:
    counts = {
        s: sum(1 for t in TASKS if t["status"] == s)
        for s in ("queued", "running", "completed", "failed", "cancelled")
    }
    per_service = {
        s["service_id"]: {
            status: sum(1 for t in TASKS if t["service_id"] == s["service_id"] and t["status"] == status)
            for status in counts
        }
        for s in SERVICES
    }
    return {
        "deployment": "demo",
        "services": SERVICES,
        "sessions": len(SESSIONS),
        "tasks": counts,
        "service_tasks": per_service,
        "recent_tasks": TASKS[::-1],
        "changes_seq": 120,
    }


class SilentStream(httpx.AsyncByteStream):
    """An SSE body that sends its frames, then nothing, until the client goes away."""

    def __init__(self, frames: bytes, end: bool) -> None:
        self._frames = frames
        self._end = end

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self._frames
        if not self._end:
            await asyncio.Event().wait()


def _sse(events: list[dict[str, Any]], end_status: str | None) -> bytes:
    out = [b"retry: 1000\n\n"]
    for event in events:
        out.append(f"id: {event['seq']}\nevent: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())
    if end_status is not None:
        out.append(f"event: end\ndata: {json.dumps({'status': end_status})}\n\n".encode())
    return b"".join(out)


def _handle(request: httpx.Request) -> httpx.Response:
    path = request.url.path
    base = "/deployments/demo"
    by_id = {t["task_id"]: t for t in TASKS}
    if path == "/deployments/":
        return httpx.Response(200, json=[{"name": "demo"}])
    if path == f"{base}/state":
        return httpx.Response(200, json=state())
    if path == f"{base}/services":
        return httpx.Response(200, json=SERVICES)
    if path == f"{base}/tasks":
        return httpx.Response(200, json=TASKS[::-1] if request.url.params.get("order") == "desc" else TASKS)
    if path == f"{base}/sessions":
        return httpx.Response(
            200, json=SESSIONS[::-1] if request.url.params.get("order") == "desc" else SESSIONS
        )
    if path == f"{base}/dashboard/contexts":
        ids = request.url.params.get_list("session_id")
        return httpx.Response(200, json={"contexts": {s: 1400 + 37 * i for i, s in enumerate(ids)}})
    if path == f"{base}/changes":
        return httpx.Response(
            200, headers={"content-type": "text/event-stream"}, stream=SilentStream(b"retry: 1000\n\n", False)
        )
    if path.startswith(f"{base}/tasks/"):
        task_id, _, rest = path.removeprefix(f"{base}/tasks/").partition("/")
        task = by_id.get(task_id)
        if task is None:
            return httpx.Response(404, json={"detail": f"task '{task_id}' not found"})
        if rest == "events":
            final = task["status"] if task["status"] in ("completed", "failed", "cancelled") else None
            body = _sse(EVENTS.get(task_id, []), final)
            return httpx.Response(
                200,
                headers={"content-type": "text/event-stream"},
                stream=SilentStream(body, final is not None),
            )
        return httpx.Response(200, json=task)
    return httpx.Response(404, json={"detail": f"no route {path}"})


def fake_client() -> AsyncClient:
    """A client whose server is the fixed data above."""
    return AsyncClient("http://demo.invalid:4501", transport=httpx.MockTransport(_handle))


def unreachable_client() -> AsyncClient:
    """A client whose server never answers (every request fails to connect)."""

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    return AsyncClient("http://127.0.0.1:4501", transport=httpx.MockTransport(refuse))
