"""The control plane against a real ZeroMQ broker and state store, with the worker's side of the
protocol played by the test (so each report can be timed and repeated at will)."""

from __future__ import annotations

import asyncio
import gc
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from workflows.context.serializers import JsonSerializer
from workflows.events import HumanResponseEvent

from llamactl.server.control_plane import ControlPlane
from llamactl.server.control_plane.stored import StoredTask
from llamactl.server.errors import (
    InvalidRequest,
    ServiceNotFound,
    SessionNotFound,
    StateStoreError,
    TaskExists,
    TaskFinished,
)
from llamactl.server.mq import topics
from llamactl.server.protocol import (
    EVENT_DELIVERED,
    TaskInput,
    TaskMessage,
    WorkerMessage,
    WorkerMessageKind,
    event_msg_id,
)
from llamactl.server.types import TaskDefinition, TaskStatus
from tests.e2e.waiting import eventually, wait_until

from .conftest import DEPLOYMENT, Deliveries, Harness, record_calls


async def test_a_task_goes_out_runs_and_its_result_and_events_are_stored(harness: Harness) -> None:
    plane = await harness.control_plane()
    worker = await harness.queue()
    deliveries = Deliveries(worker)
    created = await plane.create_task(TaskDefinition(input=json.dumps({"message": "hi"})))
    assert created.status is TaskStatus.QUEUED and created.service_id == "a"
    delivery, task = await deliveries.take()
    assert task.input == {"message": "hi"} and task.context is None
    started = WorkerMessage(
        kind=WorkerMessageKind.TASK_STARTED, replica_id="a#1", service_id="a", task_id=task.task_id
    )
    await harness.report(worker, started, f"{task.task_id}:1:started")
    for n in range(3):
        await harness.progress(worker, task.task_id, n)
    await harness.finish(worker, task, {"answer": 42})
    await delivery.ack()
    done = await plane.wait_for_task(task.task_id, timeout=10)
    assert done.status is TaskStatus.COMPLETED and done.result == {"answer": 42}
    assert done.replica_id == "a#1" and done.attempts == 1
    events = [e async for e in plane.task_events(task.task_id)]
    assert [(e.seq, e.value["n"]) for e in events] == [(0, 0), (1, 1), (2, 2)]
    result = await plane.task_result(task.task_id)
    assert result is not None and json.loads(result.result) == {"answer": 42}
    await deliveries.aclose()


async def test_a_sessions_next_task_waits_and_carries_the_saved_context(harness: Harness) -> None:
    plane = await harness.control_plane()
    worker = await harness.queue()
    deliveries = Deliveries(worker)
    session = await plane.create_session()
    first = await plane.create_task(TaskDefinition(session_id=session.session_id))
    second = await plane.create_task(TaskDefinition(session_id=session.session_id))
    delivery, task = await deliveries.take()
    assert task.task_id == first.task_id
    with pytest.raises(TimeoutError):
        await deliveries.take(timeout=0.5)  # the second task is held back while the first runs
    await harness.finish(worker, task, 1, context={"state": {"seen": 1}})
    await delivery.ack()
    delivery2, task2 = await deliveries.take()
    assert task2.task_id == second.task_id
    assert task2.context == {"state": {"seen": 1}}
    await delivery2.ack()
    await deliveries.aclose()


async def test_a_session_deleted_while_its_task_runs_keeps_no_context(harness: Harness) -> None:
    """Deleting a session lets its running task finish; the Context that task's end saves has
    no session any more, and nothing would ever remove it: it goes too."""
    plane = await harness.control_plane()
    worker = await harness.queue()
    deliveries = Deliveries(worker)
    session = await plane.create_session()
    created = await plane.create_task(TaskDefinition(session_id=session.session_id))
    delivery, task = await deliveries.take()
    await plane.delete_session(session.session_id)
    await harness.finish(worker, task, 1, context={"state": {"seen": 1}})
    await delivery.ack()
    assert (await plane.wait_for_task(created.task_id, timeout=10)).result == 1
    records = plane.records

    async def no_context() -> bool:
        return await harness.store.get(records.contexts.ns, session.session_id) is None

    await eventually(no_context, 10)
    assert await records.contexts.get(session.session_id) is None
    assert await harness.store.get(records.sessions_ns, session.session_id) is None
    await deliveries.aclose()


async def test_a_late_result_from_a_zombie_replica_is_ignored(harness: Harness) -> None:
    plane = await harness.control_plane()
    worker = await harness.queue()
    deliveries = Deliveries(worker)
    created = await plane.create_task(TaskDefinition())
    delivery, task = await deliveries.take()
    await harness.finish(worker, task, "first")
    await delivery.ack()
    assert (await plane.wait_for_task(created.task_id, timeout=10)).result == "first"
    zombie = WorkerMessage(
        kind=WorkerMessageKind.TASK_FAILED,
        replica_id="a#9",
        service_id="a",
        task_id=task.task_id,
        error="late",
    )
    await harness.report(worker, zombie, "a-different-id-so-the-queue-does-not-absorb-it")
    await plane.changes.flushed()
    marker = await plane.create_task(TaskDefinition(service_id="b"))  # the inbox is past the zombie once ...
    await harness.report(  # ... it has applied a later report
        worker,
        WorkerMessage(
            kind=WorkerMessageKind.TASK_STARTED, replica_id="b#1", service_id="b", task_id=marker.task_id
        ),
        "marker-started",
    )
    await _eventually(lambda: _status_is(plane, marker.task_id, TaskStatus.RUNNING))
    still = await plane.get_task(created.task_id)
    assert still.status is TaskStatus.COMPLETED and still.result == "first" and still.error is None
    await deliveries.aclose()


async def test_a_dead_lettered_task_fails_with_a_clear_error(harness: Harness) -> None:
    plane = await harness.control_plane()
    worker = await harness.queue()
    created = await plane.create_task(TaskDefinition())
    message = TaskMessage(
        task_id=created.task_id, session_id=created.session_id, service_id="a", deployment=DEPLOYMENT
    )
    await worker.publish(
        topics.dead_letter_topic(topics.service_topic(DEPLOYMENT, "a")),
        message.model_dump_json().encode(),
        headers={"x-attempts": "5", "x-dead-reason": "lease expired"},
    )
    done = await plane.wait_for_task(created.task_id, timeout=10)
    assert done.status is TaskStatus.FAILED
    assert done.error is not None and "gave up after 5 failed attempts: lease expired" in done.error
    assert done.attempts == 5


async def test_tasks_left_unsent_are_sent_by_the_next_control_plane(harness: Harness) -> None:
    plane = await harness.control_plane()
    worker = await harness.queue()
    session = await plane.create_session()
    first = await plane.create_task(TaskDefinition(session_id=session.session_id))
    second = await plane.create_task(TaskDefinition(session_id=session.session_id))
    await plane.close()
    harness.planes.remove(plane)
    restarted = await harness.control_plane()
    deliveries = Deliveries(worker)
    delivery, task = await deliveries.take()
    assert task.task_id == first.task_id  # sent once, though both planes published it
    with pytest.raises(TimeoutError):
        await deliveries.take(timeout=0.5)
    await harness.finish(worker, task, "one")
    await delivery.ack()
    delivery2, task2 = await deliveries.take()
    assert task2.task_id == second.task_id
    await harness.finish(worker, task2, "two")
    await delivery2.ack()
    assert (await restarted.wait_for_task(second.task_id, timeout=10)).result == "two"
    await deliveries.aclose()


async def test_a_task_waiting_behind_another_is_cancelled_at_once(harness: Harness) -> None:
    plane = await harness.control_plane()
    session = await plane.create_session()
    await plane.create_task(TaskDefinition(session_id=session.session_id))
    waiting = await plane.create_task(TaskDefinition(session_id=session.session_id))
    cancelled = await plane.cancel_task(waiting.task_id)
    assert cancelled.status is TaskStatus.CANCELLED
    with pytest.raises(TaskFinished):
        await plane.cancel_task(waiting.task_id)


async def test_bad_requests_say_what_is_wrong(harness: Harness) -> None:
    plane = await harness.control_plane()
    with pytest.raises(ServiceNotFound, match="known services are a, b"):
        await plane.create_task(TaskDefinition(service_id="nope"))
    with pytest.raises(InvalidRequest, match="JSON object"):
        await plane.create_task(TaskDefinition(input="not json"))
    with pytest.raises(InvalidRequest, match="not list"):
        await plane.create_task(TaskDefinition(input="[1, 2]"))
    created = await plane.create_task(TaskDefinition())
    with pytest.raises(InvalidRequest, match="serialized workflows Event"):
        await plane.send_event(created.task_id, json.dumps({"response": "42"}))


async def _status_is(plane: ControlPlane, task_id: str, status: TaskStatus) -> bool:
    return (await plane.get_task(task_id)).status is status


async def _eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Re-check an async condition until it holds (the control plane applies reports in the background)."""
    async with asyncio.timeout(timeout):
        while not await check():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def test_a_waiter_that_gives_up_does_not_strand_another(harness: Harness) -> None:
    plane = await harness.control_plane()
    worker = await harness.queue()
    deliveries = Deliveries(worker)
    created = await plane.create_task(TaskDefinition())
    patient = asyncio.create_task(plane.wait_for_task(created.task_id, timeout=30))
    with pytest.raises(TimeoutError):
        await plane.wait_for_task(created.task_id, timeout=0.2)
    delivery, task = await deliveries.take()
    await harness.finish(worker, task, "done")
    await delivery.ack()
    assert (await asyncio.wait_for(patient, 10)).result == "done"
    await deliveries.aclose()


async def test_an_event_stream_ends_as_soon_as_its_task_does(harness: Harness) -> None:
    plane = await harness.control_plane()
    worker = await harness.queue()
    deliveries = Deliveries(worker)
    created = await plane.create_task(TaskDefinition())

    async def read_all() -> list[int]:
        return [e.seq async for e in plane.task_events(created.task_id, poll=30.0)]

    reader = asyncio.create_task(read_all())
    delivery, task = await deliveries.take()
    event = WorkerMessage(
        kind=WorkerMessageKind.TASK_EVENT,
        replica_id="a#1",
        service_id="a",
        task_id=task.task_id,
        event={"value": {}, "type": "Ping", "qualified_name": "m.Ping"},
        event_index=0,
    )
    await harness.report(worker, event, event_msg_id(task.task_id, 1, 0))
    await harness.finish(worker, task, "done")
    await delivery.ack()
    # Well inside the 30 s poll: the task's end wakes the reader.
    assert await asyncio.wait_for(reader, 10) == [0]
    await deliveries.aclose()


async def test_readers_of_one_task_share_each_read_of_its_events(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each reader read the store itself, twice per event (the new event, then an empty read)
    and the task's record besides: 50 readers of one task streaming 100 events a second took a
    whole core. Now readers at the same place share one read of the store and its envelopes."""
    plane = await harness.control_plane()
    worker = await harness.queue()
    deliveries = Deliveries(worker)
    created = await plane.create_task(TaskDefinition())
    stream = plane.records.events_stream(created.task_id)
    reads = record_calls(monkeypatch, harness.store, "read")

    async def read_all() -> list[int]:
        return [e.seq async for e in plane.task_events(created.task_id, poll=30.0)]

    readers = [asyncio.create_task(read_all()) for _ in range(20)]
    delivery, task = await deliveries.take()
    for n in range(3):
        before = len([r for r in reads if r[0] == stream])
        await harness.progress(worker, task.task_id, n)
        await wait_until(lambda: len([r for r in reads if r[0] == stream]) > before, timeout=10)
        for _ in range(10):  # every reader's turns, were there any left to come
            await asyncio.sleep(0)
        assert len([r for r in reads if r[0] == stream]) - before == 1, "one read for the 20 readers"
    await harness.finish(worker, task, "done")
    await delivery.ack()
    for reader in readers:
        assert await asyncio.wait_for(reader, 10) == [0, 1, 2]
    # A finished task's events are read at once, without waiting for news that never come.
    async with asyncio.timeout(5):
        assert [e.seq async for e in plane.task_events(created.task_id, poll=30.0)] == [0, 1, 2]
    await deliveries.aclose()


async def test_a_reader_that_joins_a_read_begun_before_an_event_still_gets_the_event(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shared read may have looked at the store before an event was written (a store reading on
    another connection than the writer's): a reader that joined it after the event's wake-up must
    read again, not wait for the next event or the poll."""
    plane = await harness.control_plane()
    worker = await harness.queue()
    deliveries = Deliveries(worker)
    created = await plane.create_task(TaskDefinition())
    delivery, task = await deliveries.take()
    original = harness.store.read
    began, release = asyncio.Event(), asyncio.Event()

    async def stale_first_read(*args: Any, **kwargs: Any) -> Any:
        result = await original(*args, **kwargs)
        if not began.is_set():  # the first read: its snapshot is taken, then it lingers
            began.set()
            await release.wait()
        return result

    monkeypatch.setattr(harness.store, "read", stale_first_read)

    async def first_seq() -> int:
        async for envelope in plane.task_events(created.task_id, poll=30.0):
            return envelope.seq
        raise AssertionError("no event")

    early = asyncio.create_task(first_seq())
    await asyncio.wait_for(began.wait(), 10)
    await harness.progress(worker, task.task_id, 0)  # stored and announced while the read lingers
    stream = plane.records.events_stream(created.task_id)

    async def stored() -> bool:
        return bool(await original(stream, 0))

    await eventually(stored, timeout=10)
    for _ in range(5):  # its wake-ups are out
        await asyncio.sleep(0)
    late = asyncio.create_task(first_seq())  # joins the lingering read
    for _ in range(5):
        await asyncio.sleep(0)
    release.set()
    assert await asyncio.wait_for(asyncio.gather(early, late), 10) == [0, 0]
    await harness.finish(worker, task, "done")
    await delivery.ack()
    await deliveries.aclose()


async def test_a_shared_read_that_fails_after_its_readers_left_leaves_no_stray_error(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The read goes on (shielded) when its readers leave; its failure must not end up in the
    loop's "exception was never retrieved" log."""
    plane = await harness.control_plane()
    created = await plane.create_task(TaskDefinition())
    reading, fail = asyncio.Event(), asyncio.Event()

    async def failing_read(*args: Any, **kwargs: Any) -> Any:
        reading.set()
        await fail.wait()
        raise StateStoreError("the store went away")

    stray: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _, context: stray.append(context))
    try:
        monkeypatch.setattr(harness.store, "read", failing_read)
        reader = asyncio.create_task(anext(aiter(plane.task_events(created.task_id))))
        await asyncio.wait_for(reading.wait(), 10)
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader
        fail.set()
        for _ in range(5):
            await asyncio.sleep(0)
        gc.collect()
    finally:
        loop.set_exception_handler(None)
    assert not stray, stray


async def test_an_event_that_reached_the_run_is_not_a_conflict_when_the_task_ends_at_once(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run may take the event and finish between the sender's look at the task's events and
    its look at the task (a human's answer often ends the run): the sender must still hear that
    the event was delivered, not that the task had already finished (CI saw the 409)."""
    plane = await harness.control_plane()
    worker = await harness.queue()
    deliveries = Deliveries(worker)
    await plane.create_task(TaskDefinition())
    delivery, task = await deliveries.take()
    started = WorkerMessage(
        kind=WorkerMessageKind.TASK_STARTED, replica_id="a#1", service_id="a", task_id=task.task_id
    )
    await harness.report(worker, started, f"{task.task_id}:1:started")
    await eventually(lambda: _status_is(plane, task.task_id, TaskStatus.RUNNING), 10)
    stream = plane.records.events_stream(task.task_id)
    original = harness.store.read
    began, release = asyncio.Event(), asyncio.Event()

    async def stale_first_read(name: str, *args: Any, **kwargs: Any) -> Any:
        result = await original(name, *args, **kwargs)
        if name == stream and not began.is_set():  # its snapshot is taken, then it lingers
            began.set()
            await release.wait()
        return result

    monkeypatch.setattr(harness.store, "read", stale_first_read)
    answer = JsonSerializer().serialize(HumanResponseEvent(response="42"))
    sending = asyncio.create_task(plane.send_event(task.task_id, answer))
    inputs = worker.subscribe(topics.task_input_topic(DEPLOYMENT, task.task_id))
    sent = TaskInput.model_validate_json((await asyncio.wait_for(anext(inputs), 10)).payload)
    await inputs.aclose()  # type: ignore[attr-defined]
    await asyncio.wait_for(began.wait(), 10)
    delivered = WorkerMessage(
        kind=WorkerMessageKind.TASK_EVENT,
        replica_id="a#1",
        service_id="a",
        task_id=task.task_id,
        event={
            "value": {"input_id": sent.input_id, "event": "HumanResponseEvent"},
            "type": EVENT_DELIVERED,
            "qualified_name": f"llamactl.{EVENT_DELIVERED}",
        },
        event_index=0,
    )
    await harness.report(worker, delivered, event_msg_id(task.task_id, 1, 0))
    await harness.finish(worker, task, "the human said 42")
    await delivery.ack()
    await eventually(lambda: _status_is(plane, task.task_id, TaskStatus.COMPLETED), 10)
    release.set()
    await asyncio.wait_for(sending, 10)  # delivered: no TaskFinished
    await deliveries.aclose()


async def test_a_task_id_sent_twice_is_a_conflict_and_leaves_the_session_clean(harness: Harness) -> None:
    plane = await harness.control_plane()
    session = await plane.create_session()
    first = await plane.create_task(TaskDefinition(task_id="same", session_id=session.session_id))
    with pytest.raises(TaskExists, match="already taken"):
        await plane.create_task(TaskDefinition(task_id="same", session_id=session.session_id))
    with pytest.raises(TaskExists):
        await plane.create_task(TaskDefinition(task_id="same"))
    assert (await plane.get_session(session.session_id)).task_ids == [first.task_id]
    sessions, _ = await plane.list_sessions()
    assert [s.session_id for s in sessions] == [session.session_id]


async def _session_freed(plane: ControlPlane, session_id: str) -> None:
    deadline = asyncio.get_running_loop().time() + 10
    while (await plane.records.get_session(session_id)).active is not None:
        assert asyncio.get_running_loop().time() < deadline, "the session's turn was never freed"
        await asyncio.sleep(0.01)


async def test_a_task_with_nothing_behind_it_ends_and_frees_its_session_in_one_commit(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    plane = await harness.control_plane()
    worker = await harness.queue()
    deliveries = Deliveries(worker)
    created = await plane.create_task(TaskDefinition(input="{}"))
    delivery, task = await deliveries.take()
    commits = record_calls(monkeypatch, harness.store, "commit")
    await harness.finish(worker, task, "done")
    await delivery.ack()
    assert (await plane.wait_for_task(created.task_id, timeout=10)).result == "done"
    await _session_freed(plane, created.session_id)
    assert len(commits) == 1, f"{len(commits)} commits to finish a task and free its session"
    await deliveries.aclose()


async def test_a_task_in_a_session_of_its_own_ends_without_reading_its_session(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The session made for a task is remembered as written: freeing it needs no read (the
    write is still conditional on that version)."""
    plane = await harness.control_plane()
    worker = await harness.queue()
    deliveries = Deliveries(worker)
    created = await plane.create_task(TaskDefinition(input="{}"))
    delivery, task = await deliveries.take()
    reads = record_calls(monkeypatch, harness.store, "get")
    await harness.finish(worker, task, "done")
    await delivery.ack()
    assert (await plane.wait_for_task(created.task_id, timeout=10)).result == "done"
    session_reads = [f"{ns}/{key}" for ns, key in reads if ns == plane.records.sessions_ns]
    monkeypatch.undo()
    await _session_freed(plane, created.session_id)
    assert session_reads == []
    assert plane.dispatcher.sessions_in_memory == 0
    await deliveries.aclose()


async def test_a_run_without_a_session_writes_reads_and_frees_no_session(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``tasks/run`` without a session (``keep_context=False``): nobody can send another task into
    its session, so the session has no record: one commit stores the task, one its end, and
    neither touches a session (before, each wrote the session's record and the end read it)."""
    plane = await harness.control_plane()
    worker = await harness.queue()
    deliveries = Deliveries(worker)
    commits = record_calls(monkeypatch, harness.store, "commit")
    reads = record_calls(monkeypatch, harness.store, "get")
    created = await plane.create_task(TaskDefinition(input="{}"), keep_context=False)
    delivery, task = await deliveries.take()
    assert task.context is None and not task.keep_context
    await harness.finish(worker, task, "done", context={"ignored": True})
    await delivery.ack()
    assert (await plane.wait_for_task(created.task_id, timeout=10)).result == "done"
    monkeypatch.undo()
    sessions, contexts = plane.records.sessions_ns, plane.records.contexts.ns
    touched = [w.ns for (writes,) in commits for w in writes if hasattr(w, "ns")]
    assert len(commits) == 2 and sessions not in touched and contexts not in touched, touched
    assert [ns for ns, _ in reads if ns in (sessions, contexts)] == []
    assert await harness.store.get(sessions, created.session_id) is None
    assert (await plane.list_sessions())[0] == []
    # nor an index entry or a count under its session: only its task knows the id
    tasks_ns = plane.records.tasks_ns
    assert await harness.store.count(tasks_ns, "session") == {}
    assert (await plane.list_tasks(session_id=created.session_id))[0] == []
    assert [t.task_id for t in (await plane.list_tasks(status=TaskStatus.COMPLETED))[0]] == [created.task_id]
    with pytest.raises(SessionNotFound):
        await plane.create_task(TaskDefinition(session_id=created.session_id))
    assert plane.dispatcher.sessions_in_memory == 0
    await deliveries.aclose()


async def test_a_run_task_never_published_is_sent_by_the_next_control_plane(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task in a session of its own is stored as handed out; if its publish never happened
    (the server died in between), the next control plane finds it without a session record."""
    plane = await harness.control_plane()
    worker = await harness.queue()

    async def lost(task: Any) -> None:
        return None

    monkeypatch.setattr(plane.dispatcher._publisher, "publish", lost)
    created = await plane.create_task(TaskDefinition(input="{}"), keep_context=False)
    await plane.close()
    harness.planes.remove(plane)
    restarted = await harness.control_plane()
    deliveries = Deliveries(worker)
    delivery, task = await deliveries.take()
    assert task.task_id == created.task_id
    await harness.finish(worker, task, "late")
    await delivery.ack()
    assert (await restarted.wait_for_task(created.task_id, timeout=10)).result == "late"
    await deliveries.aclose()


async def test_a_task_stored_behind_the_finishing_one_still_gets_its_turn(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The final commit's session write is computed before the commit; a task stored into the
    session in between makes it fail, and the turn is passed the long way."""
    plane = await harness.control_plane()
    worker = await harness.queue()
    deliveries = Deliveries(worker)
    first = await plane.create_task(TaskDefinition(input="{}"))
    delivery, task = await deliveries.take()
    release = plane.dispatcher.release_write
    second: list[str] = []

    async def stale(session_id: str, task_id: str) -> Any:
        write = await release(session_id, task_id)
        if second:
            return write
        assert write is not None  # nothing waits yet: the fast path is taken...
        created = await plane.create_task(TaskDefinition(input="{}", session_id=session_id))
        second.append(created.task_id)  # ...and this task changes the session under it
        return write

    monkeypatch.setattr(plane.inbox, "_release", stale)
    await harness.finish(worker, task, "one")
    await delivery.ack()
    assert (await plane.wait_for_task(first.task_id, timeout=10)).result == "one"
    delivery, task = await deliveries.take()
    assert [task.task_id] == second
    await harness.finish(worker, task, "two")
    await delivery.ack()
    assert (await plane.wait_for_task(second[0], timeout=10)).result == "two"
    await _session_freed(plane, first.session_id)
    await deliveries.aclose()


async def test_ids_the_engine_makes_sort_in_creation_order(harness: Harness) -> None:
    # Time-ordered ids keep the store's and the journal's b-trees appending at their last page.
    plane = await harness.control_plane()
    created = [await plane.create_task(TaskDefinition(task_id="")) for _ in range(5)]
    session = await plane.create_session()
    task_ids = [record.task_id for record in created]
    session_ids = [record.session_id for record in created] + [session.session_id]
    for made in (task_ids, session_ids):
        assert made == sorted(made) and len(set(made)) == len(made)
        assert all(uuid.UUID(value).version == 7 for value in made)
    assert uuid.UUID(TaskDefinition().task_id).version == 7  # what the Python client sends


async def test_a_waiter_woken_by_its_servers_own_final_commit_reads_the_task_no_more(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A waiter looks at the task when it starts and on each wake-up; woken by this server's own
    commit of the task's end, the cache holds the final record (which changes no more), so it
    looks no more: on a store other servers write too, each look is a read (one round trip to
    PostgreSQL saved per run). On this store nothing else wakes it, so its looks are exact."""
    plane = await harness.control_plane()
    worker = await harness.queue()
    deliveries = Deliveries(worker)
    created = await plane.create_task(TaskDefinition(input="{}"))
    delivery, task = await deliveries.take()
    peeks = record_calls(monkeypatch, plane.records, "peek_task")
    waiter = asyncio.create_task(plane.wait_for_task(created.task_id, timeout=10))

    async def started() -> bool:
        return bool(peeks)

    await eventually(started, 5)  # its first look, before the end
    await harness.finish(worker, task, "done")
    await delivery.ack()
    assert (await waiter).result == "done"
    assert peeks == [(created.task_id,)]
    await deliveries.aclose()


async def test_a_run_looks_at_its_task_only_when_woken_and_not_at_its_end(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``tasks/run`` listens for the task's changes before creating it, so its first look is the
    record it wrote; woken by its own server's commit of the task's end, it takes the cached
    final record. Each look it saves is a read of the task on a store other servers write too
    (before: one at the start). On this store nothing else wakes it, so it looks no more."""
    plane = await harness.control_plane()
    worker = await harness.queue()
    deliveries = Deliveries(worker)
    peeks = record_calls(monkeypatch, plane.records, "peek_task")
    run = asyncio.create_task(plane.run_task(TaskDefinition(input="{}"), timeout=10))
    delivery, task = await deliveries.take()
    await harness.finish(worker, task, "done")
    await delivery.ack()
    assert (await run).result == "done"
    assert peeks == []
    await deliveries.aclose()


async def test_a_result_is_stored_without_reading_its_task_on_a_shared_store(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The inbox looks at its cached record of the task first, even on a store other servers
    write: its conditional write fails should the record have changed since (before, a fresh
    read of the task came first: one round trip per result)."""
    monkeypatch.setattr(harness.store, "shared", True)
    plane = await harness.control_plane()
    worker = await harness.queue()
    deliveries = Deliveries(worker)
    created = await plane.create_task(TaskDefinition(input="{}"), keep_context=False)
    delivery, task = await deliveries.take()
    reads = record_calls(monkeypatch, harness.store, "get")
    await harness.finish(worker, task, "done")
    await delivery.ack()
    # No waiter (a waiter woken by the change feed's follower reads the task: that is its own
    # read); the inbox's commit caches the final record.
    await wait_until(lambda: plane.records.final_cached(created.task_id) is not None, 10)
    assert [key for ns, key in reads if ns == plane.records.tasks_ns] == []
    monkeypatch.undo()
    assert (await plane.get_task(created.task_id)).result == "done"
    await deliveries.aclose()


async def test_a_result_for_a_task_another_server_finished_since_it_was_cached_is_late(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """This server's cached record still says the task runs while another server has stored its
    end: the result's conditional write fails, the task is read again, and the result is ignored
    as late. The first result stands and the late one's Context is not saved."""
    monkeypatch.setattr(harness.store, "shared", True)
    plane = await harness.control_plane()
    worker = await harness.queue()
    deliveries = Deliveries(worker)
    created = await plane.create_task(TaskDefinition(input="{}"))
    delivery, task = await deliveries.take()
    found = await harness.store.get(plane.records.tasks_ns, created.task_id)
    assert found is not None
    other = StoredTask.model_validate_json(found.value)
    other.status, other.result, other.replica_id = TaskStatus.COMPLETED, "first", "b#1"
    assert (await harness.store.commit([plane.records.task_write(other, found.version)])).ok
    await harness.finish(worker, task, "second", context={"n": 9})
    await delivery.ack()
    await wait_until(lambda: plane.inbox.counters.late_results == 1, 10)
    assert (await plane.get_task(created.task_id)).result == "first"
    assert await plane.records.contexts.get(created.session_id) != {"n": 9}
    await deliveries.aclose()
