"""The sync and async clients against a real `llamactl serve` (the `demo` deployment)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing, closing

import pytest
from workflows.events import HumanResponseEvent

from llamactl.client import AsyncClient, BadRequest, Client, Conflict, NotFound, TaskFailed
from llamactl.server.types import TaskStatus
from tests.llamactl.serving import Server


@pytest.fixture
def client(demo_server: Server) -> Iterator[Client]:
    with Client(demo_server.url) as c:
        yield c


@pytest.fixture
async def aclient(demo_server: Server) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(demo_server.url) as c:
        yield c


def test_status_deployments_services_and_state(client: Client) -> None:
    assert client.status().deployments == ["demo"]
    assert [d.name for d in client.deployments.list()] == ["demo"]
    assert client.deployments.get("demo").name == "demo"
    demo = client.deployment("demo")
    services = {s.service_id: s for s in demo.services()}
    assert services["echo"].ready
    state = demo.state()
    assert state.deployment == "demo"
    assert {s.service_id for s in state.services} == set(services)
    with pytest.raises(NotFound, match="nope"):
        client.deployments.get("nope")


def test_run_create_events_and_result(client: Client) -> None:
    tasks = client.deployment("demo").tasks
    assert tasks.run({"message": "hi"}) == "Message received: hi"
    assert tasks.run({"name": "Ada"}, service="func") == "hello Ada"
    task = tasks.create({"count": 3}, service="stream")
    assert task.service_id == "stream" and task.session_id
    events = list(tasks.events(task.task_id))
    assert [e.type for e in events] == ["Progress"] * 3 + ["StopEvent"]
    assert [e.seq for e in events] == [0, 1, 2, 3]
    assert [e.value for e in tasks.events(task.task_id, from_seq=2)] == [{"n": 2}, {"result": 3}]
    raw = list(tasks.events(task.task_id, raw=True))
    assert raw[0] == {"__is_pydantic": True, "value": {"n": 0}, "qualified_name": events[0].qualified_name}
    result = tasks.result(task.task_id, timeout=30)
    assert result is not None and result.result == "3"
    record = tasks.get(task.task_id)
    assert (record.status, record.result) == (TaskStatus.COMPLETED, 3)
    assert task.task_id in {t.task_id for t in tasks.list(status="completed")}
    assert [t.task_id for t in tasks.list(session_id=task.session_id)] == [task.task_id]


def test_a_failed_run_raises_task_failed(client: Client) -> None:
    with pytest.raises(TaskFailed) as caught:
        client.deployment("demo").tasks.run({"message": "x"}, service="boom")
    assert caught.value.task_status == "failed"
    assert "cannot handle 'x'" in caught.value.detail
    assert caught.value.task_id is not None
    record = client.deployment("demo").tasks.get(caught.value.task_id)
    assert record.error == "ValueError: cannot handle 'x'"


def test_human_in_the_loop_with_a_workflows_event(client: Client) -> None:
    tasks = client.deployment("demo").tasks
    task = tasks.create(service="hitl")
    with closing(tasks.events(task.task_id)) as events:
        first = next(events)
        assert first.type == "InputRequiredEvent"
        sent = tasks.send_event(task.task_id, HumanResponseEvent(response="42"))
        assert sent.service_id == "hitl"
        # the worker says where the event reached the run, then the workflow goes on
        assert [e.type for e in events] == ["EventDelivered", "StopEvent"]
    assert tasks.get(task.task_id).result == "the human said 42"
    with pytest.raises(Conflict):
        tasks.send_event(task.task_id, {"response": "late"})
    waiting = tasks.create(service="hitl")
    try:
        with pytest.raises(BadRequest):
            tasks.send_event(waiting.task_id, "not an event")
    finally:
        tasks.cancel(waiting.task_id)


def test_sessions(client: Client) -> None:
    demo = client.deployment("demo")
    session = demo.sessions.create()
    assert session.session_id in {s.session_id for s in demo.sessions.list()}
    assert [demo.tasks.run(service="counter", session_id=session.session_id) for _ in range(2)] == [1, 2]
    assert len(demo.sessions.get(session.session_id).task_ids) == 2
    demo.sessions.delete(session.session_id)
    with pytest.raises(NotFound):
        demo.sessions.get(session.session_id)


def test_cancel_and_the_change_feed(client: Client) -> None:
    demo = client.deployment("demo")
    start = demo.state().changes_seq
    task = demo.tasks.create({"seconds": 60}, service="slow")
    seen: list[str] = []
    with closing(demo.changes(from_seq=start)) as changes:
        for change in changes:
            assert change.seq >= start
            if change.kind != "task.status" or change.data["task_id"] != task.task_id:
                continue
            seen.append(change.data["status"])
            if change.data["status"] == "running":
                demo.tasks.cancel(task.task_id)
            if change.data["status"] == "cancelled":
                break
    assert seen[0] == "queued" and seen[-1] == "cancelled"
    with pytest.raises(Conflict):
        demo.tasks.cancel(task.task_id)


async def test_the_async_client(aclient: AsyncClient) -> None:
    assert (await aclient.status()).deployments == ["demo"]
    assert [d.name for d in await aclient.deployments.list()] == ["demo"]
    demo = aclient.deployment("demo")
    assert await demo.tasks.run({"message": "hi"}) == "Message received: hi"
    task = await demo.tasks.create({"count": 2}, service="stream")
    events = [e async for e in demo.tasks.events(task.task_id)]
    assert [e.type for e in events] == ["Progress", "Progress", "StopEvent"]
    result = await demo.tasks.result(task.task_id)
    assert result is not None and json.loads(result.result) == 2
    assert (await demo.tasks.get(task.task_id)).status is TaskStatus.COMPLETED
    assert task.task_id in {t.task_id for t in await demo.tasks.list(session_id=task.session_id)}
    with pytest.raises(TaskFailed):
        await demo.tasks.run(service="boom")
    with pytest.raises(NotFound):
        await aclient.deployment("nope").state()


async def test_async_human_in_the_loop_sessions_and_changes(aclient: AsyncClient) -> None:
    demo = aclient.deployment("demo")
    session = await demo.sessions.create()
    assert session.session_id in {s.session_id for s in await demo.sessions.list()}
    start = (await demo.state()).changes_seq
    task = await demo.tasks.create(service="hitl", session_id=session.session_id)
    async with aclosing(demo.tasks.events(task.task_id)) as events:
        async for event in events:
            assert event.type == "InputRequiredEvent"
            await demo.tasks.send_event(task.task_id, {"response": "yes"}, service_id="hitl")
            break
    async with aclosing(demo.changes(from_seq=start)) as changes:
        async for change in changes:
            if change.data.get("task_id") == task.task_id and change.data.get("status") == "completed":
                break
    assert (await demo.tasks.get(task.task_id)).result == "the human said yes"
    assert (await demo.sessions.get(session.session_id)).task_ids == [task.task_id]
    await demo.sessions.delete(session.session_id)
    with pytest.raises(NotFound):
        await demo.sessions.get(session.session_id)
