"""The uvicorn server run inside the caller's loop: idle, it costs no wake-ups of its own, and it
stops at once when asked."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from llamactl.server.apiserver.listen import UvicornServer
from tests.loop_wakeups import LoopWakeups


async def _hello(_: object) -> PlainTextResponse:
    return PlainTextResponse("hello")


async def test_an_idle_server_wakes_its_loop_once_a_second_and_stops_when_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = UvicornServer(Starlette(routes=[Route("/", _hello)]), "127.0.0.1", 0)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url) as client:
            answer = await client.get("/")
        assert answer.text == "hello" and "date" in answer.headers
        wakeups = LoopWakeups(monkeypatch)
        await asyncio.sleep(2.0)
    finally:
        await asyncio.wait_for(server.stop(), 10)
    print(f"the idle server's loop woke {wakeups.count} times in 2 s")
    assert wakeups.count <= 8  # ~2 a second, the sleep, the closed connection (uvicorn's own: 24)
