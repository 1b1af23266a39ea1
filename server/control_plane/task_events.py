"""A task's event log as readers see it, and the events sent into a running task."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from llamactl.server.control_plane.records import ControlPlaneRecords
from llamactl.server.control_plane.signals import TaskSignals
from llamactl.server.errors import (
    InvalidRequest,
    StateStoreError,
    TaskFinished,
    TaskNotRunning,
    WorkerNoAnswer,
)
from llamactl.server.ids import new_hex_id
from llamactl.server.mq import topics
from llamactl.server.mq.base import MessageQueue
from llamactl.server.protocol import EVENT_REJECTED, TaskInput, TaskInputKind
from llamactl.server.types import ASKING, EventEnvelope, TaskStatus, TaskWhere, shown_status

__all__ = ["EVENT_WAIT", "TaskEvents"]

_BATCH = 500
"""Events read from the store at a time."""
_OUTAGE_RETRY = 1.0
"""Seconds between a follower's reads while the state store is unreachable."""
_SHARED_WHERE_POLL = 0.1
"""Seconds between looks for a where answer that another control plane may have stored."""

log = logging.getLogger(__name__)

EVENT_WAIT = 10.0
"""Seconds ``send`` waits for a running task's worker to say whether it took the event (and
``where`` for it to say where the task's code is)."""


class TaskEvents:
    """Reads tasks' event logs (woken by :class:`TaskSignals`) and sends events into tasks."""

    def __init__(
        self,
        deployment: str,
        records: ControlPlaneRecords,
        signals: TaskSignals,
        queue: MessageQueue,
        stopping: asyncio.Event,
    ) -> None:
        self._deployment = deployment
        self._records = records
        self._signals = signals
        self._queue = queue
        self._stopping = stopping
        self._reads: dict[tuple[str, int, int], _SharedRead] = {}
        """Reads of a task's events under way, by (stream, from, limit): the readers of one task,
        woken together by its next event, share one read of the store and its envelopes."""

    async def read(
        self, task_id: str, from_seq: int = 0, *, follow: bool = True, poll: float = 5.0
    ) -> AsyncIterator[EventEnvelope]:
        """The task's events from ``from_seq`` on; with ``follow``, until the task has finished.

        New events and the task's end wake the reader at once; ``poll`` only bounds how long it
        waits when another control plane (sharing the store) is the one writing.
        """
        async for batch in self.read_batches(task_id, from_seq, follow=follow, poll=poll):
            for envelope in batch:
                yield envelope

    async def read_batches(
        self, task_id: str, from_seq: int = 0, *, follow: bool = True, poll: float = 5.0
    ) -> AsyncIterator[list[EventEnvelope]]:
        """:meth:`read`, a batch (never empty) for each read of the store: what came since the
        last one. A stream sends a batch in one write: a reader that fell behind costs a write
        per batch, not per event; readers at the same place share one read, and the batch (do
        not change its envelopes)."""
        await self._records.get_task(task_id)
        stream = self._records.events_stream(task_id)
        seq = from_seq
        with self._signals.listen(task_id) as changed:
            while True:
                try:
                    read = self._shared_read(task_id, stream, seq, _BATCH)
                    changed.clear()
                    batch = await read.result(changed)
                    if batch:
                        seq = batch[-1].seq + 1
                        yield batch
                        if len(batch) == _BATCH or not follow or changed.is_set():
                            continue  # more may be there already
                    if (
                        not follow
                        or self._stopping.is_set()
                        or (await self._records.peek_task(task_id)).status.is_final
                    ):
                        # The final status is written with (or after) the task's last events,
                        # so one more read after seeing it catches everything.
                        last = await self._shared_read(task_id, stream, seq, 100_000).result(changed)
                        if last:
                            yield last
                        return
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(poll):
                            await changed.wait()
                except StateStoreError:
                    if not follow or self._stopping.is_set() or self._records.store.outage is None:
                        raise
                    # The store is unreachable for now: a follower waits for it and reads on from
                    # where it was, instead of seeing its stream end early.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(_OUTAGE_RETRY):
                            await self._stopping.wait()

    def _shared_read(self, task_id: str, stream: str, seq: int, limit: int) -> _SharedRead:
        """The read of ``limit`` events from ``seq`` under way, or a new one."""
        key = (stream, seq, limit)
        read = self._reads.get(key)
        if read is None or read.future.done():
            read = _SharedRead(task_id, self._signals, self._load(stream, seq, limit))
            self._reads[key] = read
            read.future.add_done_callback(lambda _: self._forget(key, read))
        return read

    def _forget(self, key: tuple[str, int, int], read: _SharedRead) -> None:
        if self._reads.get(key) is read:
            del self._reads[key]

    async def _load(self, stream: str, seq: int, limit: int) -> list[EventEnvelope]:
        entries = await self._records.store.read(stream, seq, limit=limit)
        return [_envelope(entry.value, entry.offset) for entry in entries]

    async def send(self, task_id: str, event_obj_str: str) -> None:
        """Send a serialized workflows Event into a running (or queued) task.

        For a running task it returns once the task's worker has handed the event to the run, and
        raises InvalidRequest when the worker could not build or deliver it (an unknown class,
        fields that do not fit, a service that is not a workflow), TaskFinished when the task
        ended first. A worker that does not answer within ``EVENT_WAIT`` seconds leaves the event
        on its way. A queued task reads its inputs when it starts: then nobody waits.
        """
        task = await self._records.get_task(task_id)
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
        answer = await self._ask(
            task_id,
            TaskInput(kind=TaskInputKind.EVENT, event_obj_str=event_obj_str, input_id=new_hex_id()),
            wait=task.status is TaskStatus.RUNNING,
        )
        if answer is None:
            log.warning("task %s: its worker did not confirm an event within %gs", task_id, EVENT_WAIT)
        elif answer["type"] == EVENT_REJECTED:
            value = answer["value"]
            raise InvalidRequest(
                f"task '{task_id}' could not take the event {value.get('event')}: {value.get('error')}"
            )

    async def where(self, task_id: str) -> TaskWhere:
        """Ask the worker running the task where its code is now.

        Raises TaskNotRunning for a task queued or ended (also when it ends before the answer),
        WorkerNoAnswer when its worker does not answer within ``EVENT_WAIT`` seconds.
        """
        task = await self._records.get_task(task_id)
        if task.status is TaskStatus.QUEUED and not task.own_session:
            await self._queued_behind(task.task_id, task.session_id)
        if task.status is not TaskStatus.RUNNING:
            raise TaskNotRunning(task_id, task.status.value)
        answer = await self._ask(
            task_id, TaskInput(kind=TaskInputKind.WHERE, input_id=new_hex_id()), wait=True
        )
        if answer is None:
            raise WorkerNoAnswer(task_id, task.replica_id, EVENT_WAIT)
        value = answer["value"]
        return TaskWhere(
            task_id=task_id,
            replica_id=task.replica_id,
            where=value.get("where") or "",
            stacks=value.get("stacks"),
        )

    async def _queued_behind(self, task_id: str, session_id: str) -> None:
        """Raises TaskNotRunning naming the task of its session that runs first, if there is one."""
        session = await self._records.find_session(session_id)
        if session is None or session.active in (None, task_id):
            return
        ahead = await self._records.find_task(session.active)
        asks = ahead is not None and shown_status(ahead.status, ahead.waiting_for_answer) == ASKING
        raise TaskNotRunning(task_id, TaskStatus.QUEUED.value, behind=session.active, behind_asks=asks)

    async def _ask(self, task_id: str, question: TaskInput, *, wait: bool) -> dict[str, Any] | None:
        """Send ``question`` to the task's worker; with ``wait``, return its answer (an event in the
        task's log naming its ``input_id``; a where's: the task's latest where answer), None after
        ``EVENT_WAIT`` seconds without one. Raises TaskFinished (TaskNotRunning for a where) when
        the task ends first."""
        stream = self._records.events_stream(task_id)
        offset = await self._records.store.log_length(stream)
        await self._queue.publish(
            topics.task_input_topic(self._deployment, task_id), question.model_dump_json().encode()
        )
        if not wait:
            return None
        where = question.kind is TaskInputKind.WHERE
        # Another control plane sharing the store may store the answer: its log appends wake us,
        # its where answers do not, so those are looked for every so often.
        poll = _SHARED_WHERE_POLL if where and self._records.store.shared else None
        with self._signals.listen(task_id) as changed:
            try:
                async with asyncio.timeout(EVENT_WAIT):
                    while True:
                        changed.clear()
                        # Looked at before the read: the run may answer and end at once, and the
                        # final status is written after the task's last events, so a read made
                        # after seeing it finds the answer if there was one.
                        task = await self._records.get_task(task_id)
                        if where:
                            answer = await self._where_answer(task_id, question.input_id)
                        else:
                            answer, offset = await self._logged_answer(stream, offset, question.input_id)
                        if answer is not None:
                            return answer
                        if task.status.is_final:
                            if where:
                                raise TaskNotRunning(task_id, task.status.value)
                            raise TaskFinished(task_id, task.status.value)
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(poll):
                                await changed.wait()
            except TimeoutError:
                return None

    async def _logged_answer(
        self, stream: str, offset: int, input_id: str | None
    ) -> tuple[dict[str, Any] | None, int]:
        """The event of the task's log from ``offset`` on naming ``input_id``, and where to read on."""
        while entries := await self._records.store.read(stream, offset, limit=_BATCH):
            for entry in entries:
                offset = entry.offset + 1
                event = json.loads(entry.value)
                value = event.get("value")
                if isinstance(value, dict) and value.get("input_id") == input_id:
                    return dict(event), offset
            if len(entries) < _BATCH:
                break
        return None, offset

    async def _where_answer(self, task_id: str, input_id: str | None) -> dict[str, Any] | None:
        """The task's latest where answer, if it answers ``input_id``."""
        found = await self._records.store.get(self._records.where_ns, task_id)
        if found is None:
            return None
        answer = json.loads(found.value)
        value = answer.get("value") if isinstance(answer, dict) else None
        return dict(answer) if isinstance(value, dict) and value.get("input_id") == input_id else None


def _envelope(value: bytes, offset: int) -> EventEnvelope:
    envelope = EventEnvelope.model_validate_json(value)
    envelope.seq = offset
    return envelope


class _SharedRead:
    """One read of a task's events that several readers await.

    A reader that joins it clears its own wake-up after the read began, so a change made in
    between would be lost to it (the read may have missed it: the state store may read on another
    connection than the one that wrote): the read therefore listens to the task from its start,
    and :meth:`result` hands what it heard on to each reader.
    """

    def __init__(
        self, task_id: str, signals: TaskSignals, load: Coroutine[Any, Any, list[EventEnvelope]]
    ) -> None:
        self.changed = signals.add(task_id)
        self.future = asyncio.ensure_future(load)
        self.future.add_done_callback(lambda done: self._done(task_id, signals, done))

    def _done(self, task_id: str, signals: TaskSignals, done: asyncio.Future[list[EventEnvelope]]) -> None:
        signals.remove(task_id, self.changed)
        if not done.cancelled():
            done.exception()  # its readers may all have left: a failure is theirs, not a stray log

    async def result(self, changed: asyncio.Event) -> list[EventEnvelope]:
        """The events; sets ``changed`` if the task changed while they were read. One reader that
        leaves (its client went away) does not cancel the read for the others."""
        try:
            return await asyncio.shield(self.future)
        finally:
            if self.changed.is_set():
                changed.set()
