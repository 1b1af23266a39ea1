"""The control plane of one deployment: sessions, tasks, their event logs, and the service registry.

It owns no process and no socket of its own: it reads and writes a :class:`StateStore`, publishes
tasks and consumes worker reports through a :class:`MessageQueue`, and leaves replica choice to
the queue's credit-based delivery (see :mod:`llamactl.server.orchestrator`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Mapping

from llamactl.server.control_plane.changes import ChangeFeed
from llamactl.server.control_plane.dispatcher import Dispatcher
from llamactl.server.control_plane.inbox import Inbox
from llamactl.server.control_plane.records import ControlPlaneRecords, StoredTask
from llamactl.server.control_plane.registry import ServiceRegistry
from llamactl.server.control_plane.signals import TaskSignals
from llamactl.server.errors import InvalidRequest, TaskFinished
from llamactl.server.mq import topics
from llamactl.server.mq.base import MessageQueue
from llamactl.server.orchestrator import Orchestrator
from llamactl.server.protocol import TaskInput, TaskInputKind
from llamactl.server.state.base import StateStore
from llamactl.server.types import (
    EventEnvelope,
    SessionDefinition,
    TaskDefinition,
    TaskRecord,
    TaskResult,
    TaskStatus,
)

__all__ = ["ControlPlane"]

log = logging.getLogger(__name__)


class ControlPlane:
    def __init__(
        self,
        deployment: str,
        *,
        store: StateStore,
        queue: MessageQueue,
        orchestrator: Orchestrator,
        registry: ServiceRegistry,
        timeouts: Mapping[str, float | None] | None = None,
    ) -> None:
        self.deployment = deployment
        self.records = ControlPlaneRecords(store, deployment)
        self.queue = queue
        self.orchestrator = orchestrator
        self.registry = registry
        self.changes = ChangeFeed(store, deployment, self.records.changes_stream)
        self.dispatcher = Dispatcher(self.records, queue, timeouts or {})
        self.signals = TaskSignals()
        self.inbox = Inbox(
            self.records,
            registry,
            on_status=self._status_changed,
            on_finished=self._finished,
            on_event=self.signals.notify,
        )
        self._janitor: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start consuming worker reports and hand out the tasks a previous run left unfinished."""
        self.changes.start()
        self.inbox.consume(self.queue, topics.control_topic(self.deployment))
        for service_id in self.registry.service_ids():
            self.watch_service(service_id)
        resent = await self.dispatcher.recover()
        if resent:
            log.info("deployment %s: handed out %d unfinished task(s) again", self.deployment, resent)
        self._janitor = asyncio.create_task(self._expire_replicas(), name=f"janitor:{self.deployment}")

    def watch_service(self, service_id: str) -> None:
        """Consume the dead letters of a service's topic (tasks whose workers kept dying)."""
        topic = topics.dead_letter_topic(topics.service_topic(self.deployment, service_id))
        self.inbox.consume(self.queue, topic, dead_letters=True)

    async def close(self) -> None:
        if self._janitor is not None:
            self._janitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._janitor
        await self.inbox.close()
        await self.changes.close()
        self.signals.notify_all()

    # --- sessions ----------------------------------------------------------------------------

    async def create_session(self, session_id: str | None = None) -> SessionDefinition:
        record, created = await self.records.create_session(session_id or str(uuid.uuid4()))
        if created:
            self.changes.emit("session.created", {"session_id": record.session_id})
        return record.definition()

    async def get_session(self, session_id: str) -> SessionDefinition:
        return (await self.records.get_session(session_id)).definition()

    async def list_sessions(self) -> list[SessionDefinition]:
        return [s.definition() for s in await self.records.list_sessions()]

    async def delete_session(self, session_id: str) -> None:
        await self.records.delete_session(session_id)
        self.changes.emit("session.deleted", {"session_id": session_id})

    # --- tasks -------------------------------------------------------------------------------

    async def create_task(self, definition: TaskDefinition) -> TaskRecord:
        """Store a task (queued) and hand it to its service; return at once.

        Without a session id a new session is made for the task. An unknown session id is an
        error, so a typo cannot silently start from an empty Context.
        """
        route = self.orchestrator.route(definition.service_id)
        _decode_input(definition.input)
        task = StoredTask(
            task_id=definition.task_id or str(uuid.uuid4()),
            deployment=self.deployment,
            service_id=route.service_id,
            session_id=definition.session_id or str(uuid.uuid4()),
            input=definition.input,
        )
        session_write: Awaitable[object]
        if definition.session_id:
            await self.records.get_session(task.session_id)
            session_write = self.records.add_task_to_session(task.session_id, task.task_id)
        else:
            session_write = self._new_session_for(task)

        async def store(stored: StoredTask) -> None:
            # Both writes go to the store together (one group commit).
            inserted, added = await asyncio.gather(
                self.records.insert_task(stored), session_write, return_exceptions=True
            )
            if isinstance(inserted, BaseException):
                # Undo the session's half of the pair, so it never names a task that is not there.
                if not definition.session_id:
                    await self.records.sessions.delete(stored.session_id)
                elif not isinstance(added, BaseException):
                    await self.records.remove_task_from_session(stored.session_id, stored.task_id)
                raise inserted
            if isinstance(added, BaseException):
                raise added
            self._status_changed(stored)

        await self.dispatcher.submit(task, store)
        return task.public()

    async def _new_session_for(self, task: StoredTask) -> None:
        await self.records.create_session(task.session_id, [task.task_id])
        self.changes.emit("session.created", {"session_id": task.session_id})

    async def run_task(self, definition: TaskDefinition, timeout: float | None = None) -> TaskRecord:
        """Create a task and wait for it to finish."""
        task = await self.create_task(definition)
        return await self.wait_for_task(task.task_id, timeout=timeout)

    async def get_task(self, task_id: str) -> TaskRecord:
        return (await self.records.get_task(task_id)).public()

    async def list_tasks(self, session_id: str | None = None) -> list[TaskRecord]:
        tasks = await self.records.list_tasks()
        if session_id is not None:
            tasks = [t for t in tasks if t.session_id == session_id]
        tasks.sort(key=lambda t: t.created_at)
        return [t.public() for t in tasks]

    async def wait_for_task(self, task_id: str, timeout: float | None = None) -> TaskRecord:
        """Wait until the task is completed, failed or cancelled. Raises TimeoutError."""
        with self.signals.listen(task_id) as changed:
            async with asyncio.timeout(timeout):
                while True:
                    changed.clear()
                    task = await self.records.get_task(task_id)
                    if task.status.is_final:
                        return task.public()
                    await changed.wait()

    async def task_result(self, task_id: str) -> TaskResult | None:
        """Llama Deploy's TaskResult for a finished task (None while it runs)."""
        task = await self.records.get_task(task_id)
        if not task.status.is_final:
            return None
        if task.status is TaskStatus.COMPLETED:
            result = task.result if isinstance(task.result, str) else json.dumps(task.result)
        else:
            result = task.error or task.status.value
        return TaskResult(task_id=task_id, result=result, data={"status": task.status.value})

    async def task_events(
        self, task_id: str, from_seq: int = 0, *, follow: bool = True, poll: float = 5.0
    ) -> AsyncIterator[EventEnvelope]:
        """The task's events from ``from_seq`` on; with ``follow``, until the task has finished.

        New events and the task's end wake the reader at once; ``poll`` only bounds how long it
        waits when another control plane (sharing the store) is the one writing.
        """
        await self.records.get_task(task_id)
        stream = self.records.events_stream(task_id)
        seq = from_seq
        with self.signals.listen(task_id) as changed:
            while True:
                changed.clear()
                entries = await self.records.store.read(stream, seq, limit=500)
                for entry in entries:
                    seq = entry.offset + 1
                    yield _envelope(entry.value, entry.offset)
                if entries:
                    continue
                if not follow or (await self.records.get_task(task_id)).status.is_final:
                    # The final status is written after the task's last event, so one more read
                    # after seeing it catches everything.
                    for entry in await self.records.store.read(stream, seq, limit=100_000):
                        yield _envelope(entry.value, entry.offset)
                    return
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(poll):
                        await changed.wait()

    async def send_event(self, task_id: str, event_obj_str: str) -> None:
        """Send a serialized workflows Event into a running (or queued) task."""
        task = await self.records.get_task(task_id)
        if task.status.is_final:
            raise TaskFinished(task_id, task.status.value)
        try:
            parsed = json.loads(event_obj_str)
        except ValueError as exc:
            raise InvalidRequest(f"event_obj_str is not valid JSON: {exc}") from None
        if not isinstance(parsed, dict) or "qualified_name" not in parsed:
            raise InvalidRequest(
                "event_obj_str must be a serialized workflows Event: "
                '{"__is_pydantic": true, "value": {...}, "qualified_name": "module.EventClass"}'
            )
        payload = TaskInput(kind=TaskInputKind.EVENT, event_obj_str=event_obj_str)
        await self.queue.publish(
            topics.task_input_topic(self.deployment, task_id), payload.model_dump_json().encode()
        )

    async def cancel_task(self, task_id: str) -> TaskRecord:
        """Cancel a task: at once if it has not been handed out, else by asking its worker."""
        task = await self.records.get_task(task_id)
        if task.status.is_final:
            raise TaskFinished(task_id, task.status.value)
        if self.dispatcher.is_waiting(task):

            def cancel(t: StoredTask) -> bool:
                if t.status.is_final:
                    return False
                t.status = TaskStatus.CANCELLED
                t.error = "cancelled before it started"
                return True

            task = await self.records.update_task(task_id, cancel)
            if task.status is TaskStatus.CANCELLED:
                self._status_changed(task)
                await self._finished(task)
            return task.public()
        await self.records.update_task(task_id, _request_cancel)
        await self.queue.publish(
            topics.task_input_topic(self.deployment, task_id),
            TaskInput(kind=TaskInputKind.CANCEL).model_dump_json().encode(),
            msg_id=f"{task_id}:cancel",
        )
        return (await self.records.get_task(task_id)).public()

    # --- internals ---------------------------------------------------------------------------

    def _status_changed(self, task: StoredTask) -> None:
        self.changes.emit(
            "task.status",
            {
                "task_id": task.task_id,
                "session_id": task.session_id,
                "service_id": task.service_id,
                "status": task.status.value,
                "attempts": task.attempts,
                "replica_id": task.replica_id,
                "error": task.error,
            },
        )

    async def _finished(self, task: StoredTask) -> None:
        self.signals.notify(task.task_id)
        await self.dispatcher.finished(task)

    async def _expire_replicas(self) -> None:
        while True:
            await asyncio.sleep(self.registry.heartbeat_interval)
            self.registry.expire()


def _envelope(value: bytes, offset: int) -> EventEnvelope:
    envelope = EventEnvelope.model_validate_json(value)
    envelope.seq = offset
    return envelope


def _request_cancel(task: StoredTask) -> bool:
    if task.cancel_requested or task.status.is_final:
        return False
    task.cancel_requested = True
    return True


def _decode_input(raw: str) -> dict[str, object]:
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise InvalidRequest(
            f"task input must be a JSON object of the workflow's arguments, e.g. "
            f'\'{{"message": "hi"}}\': {exc}'
        ) from None
    if not isinstance(value, dict):
        raise InvalidRequest(
            f"task input must be a JSON object of the workflow's arguments, not {type(value).__name__}"
        )
    return value
