"""What the dashboard added to the API and the client: Context sizes, and a change feed that reports
drops instead of hiding them."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import aclosing

import httpx
import pytest

from llamactl.client import AsyncClient, BadRequest, Client, ServerUnreachable, StreamBroken
from tests.llamactl.serving import Server


@pytest.fixture
async def client(tui_server: Server) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(tui_server.url) as c:
        yield c


async def test_context_sizes_are_the_bytes_of_each_saved_context(client: AsyncClient) -> None:
    demo = client.deployment("demo")
    used = await demo.sessions.create()
    fresh = await demo.sessions.create()
    await demo.tasks.run({}, service="counter", session_id=used.session_id)
    sizes = await demo.context_sizes([used.session_id, fresh.session_id, "no-such-session"])
    assert sizes[fresh.session_id] is None and sizes["no-such-session"] is None
    assert isinstance(sizes[used.session_id], int) and sizes[used.session_id] > 0  # type: ignore[operator]


async def test_the_contexts_route_answers_400_without_session_ids(tui_server: Server) -> None:
    async with httpx.AsyncClient(base_url=tui_server.url) as http:
        answer = await http.get("/deployments/demo/dashboard/contexts")
    assert answer.status_code == 400
    assert "session_id" in answer.json()["detail"]


async def test_the_contexts_route_refuses_too_many_sessions(client: AsyncClient) -> None:
    with pytest.raises(BadRequest, match="at most 100"):
        await client.deployment("demo").context_sizes([f"s{n}" for n in range(101)])


def test_the_sync_client_has_the_same_context_sizes(tui_server: Server) -> None:
    with Client(tui_server.url) as client:
        session = client.deployment("demo").sessions.create()
        assert client.deployment("demo").context_sizes([session.session_id]) == {session.session_id: None}


async def test_watch_raises_at_once_when_nothing_answers() -> None:
    async with AsyncClient("http://127.0.0.1:9") as client:
        with pytest.raises(ServerUnreachable):
            async with aclosing(client.deployment("demo").watch()) as changes:
                async for _ in changes:
                    pass


async def test_watch_raises_when_the_server_ends_the_feed() -> None:
    change = {"kind": "session.created", "deployment": "demo", "data": {}, "at": 1.0, "seq": 0}
    body = f"id: 0\nevent: session.created\ndata: {json.dumps(change)}\n\n"

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})

    seen = []
    async with AsyncClient("http://test", transport=httpx.MockTransport(answer)) as client:
        with pytest.raises(StreamBroken):
            async with aclosing(client.deployment("demo").watch()) as changes:
                async for item in changes:
                    seen.append(item.seq)
    assert seen == [0]
