"""Two `llamactl serve` processes of one deployment, on different ports, sharing PostgreSQL (state)
and Redis (queue), each with its own workers: a task created through one is awaited, streamed
(NDJSON and SSE), answered (human in the loop), asked where it is and cancelled through the
other, and a session's Context carries over whichever server takes its tasks.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from workflows.context.serializers import JsonSerializer
from workflows.events import HumanResponseEvent

from tests.e2e.waiting import eventually
from tests.llamactl.serving import Server, write_app
from tests.postgres import PostgresSchema
from tests.server.apiserver.conftest import SseReader
from tests.server.mq.conftest import REDIS_URL

D = "/deployments/pair"


@pytest.fixture
def servers(tmp_path: Path, backends: tuple[PostgresSchema, str]) -> Iterator[list[Server]]:
    yield from two_servers(tmp_path, backends, "pair")


def two_servers(
    tmp_path: Path, backends: tuple[PostgresSchema, str], name: str, services: dict[str, str] | None = None
) -> Iterator[list[Server]]:
    """Two `serve` processes of deployment ``name`` on the test's PostgreSQL schema and Redis
    prefix (a fixture's body: yields them, stops them)."""
    pg, prefix = backends
    file = write_app(tmp_path / "app", name, services)
    text = file.read_text().replace(
        "services:\n",
        f"control-plane:\n  state_store_uri: {pg.uri}\n"
        f"message-queue:\n  type: redis\n  url: {REDIS_URL}\n  prefix: '{prefix}'\n"
        "services:\n",
        1,
    )
    file.write_text(text)
    started: list[Server] = []
    try:
        started.append(Server(file))
        started.append(Server(file))
        yield started
    finally:
        for server in started:
            assert server.stop() == 0


async def create(
    client: httpx.AsyncClient, service: str, session: str | None = None, **kwargs: object
) -> str:
    body: dict[str, object] = {"input": json.dumps(kwargs), "service_id": service}
    if session:
        body["session_id"] = session
    answer = await client.post(f"{D}/tasks/create", json=body)
    assert answer.status_code == 200, answer.text
    task_id: str = answer.json()["task_id"]
    return task_id


async def test_a_task_made_on_one_server_is_followed_answered_and_cancelled_on_the_other(
    servers: list[Server],
) -> None:
    one, two = (httpx.AsyncClient(base_url=s.url, timeout=60) for s in servers)
    async with one, two:
        # Awaited on the other server.
        task = await create(one, "func", name="pair")
        result = (await two.get(f"{D}/tasks/{task}/results", params={"timeout": 30})).json()
        assert result["result"] == "hello pair"

        # Streamed as NDJSON and SSE on the other server, from the start to the end.
        task = await create(one, "stream", count=4)
        async with two.stream("GET", f"{D}/tasks/{task}/events") as stream:
            ndjson = [json.loads(line) async for line in stream.aiter_lines() if line]
        assert ndjson == [{"n": 0}, {"n": 1}, {"n": 2}, {"n": 3}, {"result": 4}]  # Llama Deploy's shape
        async with two.stream(
            "GET", f"{D}/tasks/{task}/events", headers={"accept": "text/event-stream"}
        ) as stream:
            reader = SseReader(stream)
            frames = []
            while (frame := await reader.next()) is not None:
                frames.append(frame)
        assert frames[-1].event == "end" and json.loads(frames[-1].data)["status"] == "completed"

        # Human in the loop: asked through one server, answered through the other.
        task = await create(one, "hitl")
        async with one.stream("GET", f"{D}/tasks/{task}/events", params={"raw_event": "true"}) as stream:
            async for line in stream.aiter_lines():
                if line:
                    assert json.loads(line)["qualified_name"] == "workflows.events.InputRequiredEvent"
                    break
        definition = {
            "service_id": "hitl",
            "event_obj_str": JsonSerializer().serialize(HumanResponseEvent(response="42")),
        }
        sent = await two.post(f"{D}/tasks/{task}/events", json=definition)
        assert sent.status_code == 200, sent.text
        result = (await one.get(f"{D}/tasks/{task}/results", params={"timeout": 30})).json()
        assert result["result"] == "the human said 42"

        # Cancelled through the other server while it runs.
        task = await create(one, "slow", seconds=60)

        async def running() -> bool:
            return bool((await two.get(f"{D}/tasks/{task}")).json()["status"] == "running")

        await eventually(running, 30)
        # Asked where it is through both: the worker's answer may be stored by either server.
        for i in range(6):
            where = await (one, two)[i % 2].get(f"{D}/tasks/{task}/where")
            assert where.status_code == 200, where.text
            assert where.json()["where"].startswith("in slow (funcs.py line "), where.text
        cancelled = await two.post(f"{D}/tasks/{task}/cancel")
        assert cancelled.status_code in (200, 202), cancelled.text
        done = (await one.get(f"{D}/tasks/{task}/results", params={"timeout": 30})).json()
        assert done["data"]["status"] == "cancelled"

        # A session's Context carries over, whichever server takes its tasks.
        session = (await one.post(f"{D}/sessions/create")).json()["session_id"]
        counts = []
        for i in range(6):
            client = (one, two)[i % 2]
            task = await create(client, "counter", session)
            counts.append((await client.get(f"{D}/tasks/{task}/results", params={"timeout": 30})).json())
        assert [json.loads(c["result"]) for c in counts] == [1, 2, 3, 4, 5, 6]
