"""A scripted stand-in for the server (httpx.MockTransport), for tests that need no real one."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest

import llamactl.client
from llamactl.client import Client

Handler = Callable[[httpx.Request], httpx.Response]


def task_record(task_id: str = "t1", **fields: Any) -> dict[str, Any]:
    return {
        "task_id": task_id,
        "deployment": "demo",
        "service_id": "echo",
        "session_id": "s1",
        "input": "{}",
        "status": "completed",
        "attempts": 1,
        "created_at": 1_700_000_000.0,
        **fields,
    }


def sse(*frames: tuple[int | None, str, Any]) -> bytes:
    out = b""
    for seq, kind, data in frames:
        head = f"id: {seq}\n" if seq is not None else ""
        out += f"{head}event: {kind}\ndata: {json.dumps(data)}\n\n".encode()
    return out


def envelope(seq: int, n: int) -> dict[str, Any]:
    return {
        "value": {"n": n},
        "type": "Progress",
        "qualified_name": "flows.Progress",
        "seq": seq,
        "attempt": 1,
    }


class Broken(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A body that sends ``data`` and then drops the connection."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def __iter__(self) -> Iterator[bytes]:
        yield self._data
        raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self._data
        raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")


class FakeServer:
    """Routes ``(method, path)`` to answers and records every request."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Handler | httpx.Response | list[httpx.Response]] = {}
        self.requests: list[httpx.Request] = []

    def on(self, method: str, path: str, answer: Any, status: int = 200) -> None:
        """``answer``: JSON to send, an httpx.Response, a list of them (one per call) or a handler."""
        responses = isinstance(answer, list) and answer and all(isinstance(a, httpx.Response) for a in answer)
        if callable(answer) or isinstance(answer, httpx.Response) or responses:
            self.routes[(method, path)] = answer
        else:
            self.routes[(method, path)] = httpx.Response(status, json=answer)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        route = self.routes.get((request.method, request.url.path))
        if route is None:
            return httpx.Response(404, json={"detail": f"no route {request.method} {request.url.path}"})
        if isinstance(route, list):
            return route.pop(0)
        if isinstance(route, httpx.Response):
            return route
        return route(request)

    def last(self, method: str, path: str) -> httpx.Request:
        return [r for r in self.requests if (r.method, r.url.path) == (method, path)][-1]

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Makes every `llamactl.client.Client` the CLI builds talk to this fake."""

        def factory(base_url: str | None = None, **kwargs: Any) -> Client:
            return Client(base_url, transport=httpx.MockTransport(self), **kwargs)

        monkeypatch.setattr(llamactl.client, "Client", factory)
