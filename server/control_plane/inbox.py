"""Applies what workers report (and what the queue dead-letters) to the control plane's state.

Each report arrives as a leased delivery of the deployment's control topic and is acked only
after its effect is stored, so a control plane that dies mid-way gets it again; every effect is
idempotent (events carry idempotency keys, a final status is written once, the first result wins,
a session moves on once). A report that cannot be applied because the state store or the queue
fails right now is tried again in place, with backoff, for as long as it takes: it is never
nacked, so none is dead-lettered by an outage (see :mod:`.report_deliveries`). The reports of
one task are stored in the order its worker sent them whatever order the queue delivers them in
(see :mod:`.report_order`).

A task's record tells the truth about its attempts: when a report shows a delivery the record has
not seen (the worker of an earlier attempt died before it could say anything), the event log gets
a ``TaskAttempt`` marker for each attempt, where that attempt starts.

A run suspended at its question (``task.suspended``: its worker stopped while it waited for an
answer) has its resume point stored beside its record, and the task is handed out again from
there (``on_suspended``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from llamactl.server.control_plane.attempt_markers import ATTEMPT_EVENT, attempt_markers, event_value
from llamactl.server.control_plane.records import ControlPlaneRecords, ExtraConflict
from llamactl.server.control_plane.registry import ServiceRegistry
from llamactl.server.control_plane.replica_mirror import ReplicaMirror, apply_replica_report
from llamactl.server.control_plane.report_deliveries import Handler, ReportDeliveries
from llamactl.server.control_plane.report_order import ReportOrder
from llamactl.server.control_plane.stored import StoredTask
from llamactl.server.errors import StateStoreDamaged, TaskNotFound
from llamactl.server.mq.base import Delivery, MessageQueue
from llamactl.server.protocol import (
    TaskMessage,
    TaskResume,
    WorkerMessage,
    WorkerMessageKind,
    event_msg_id,
    waits_for_answer_after,
)
from llamactl.server.state.base import Append, Delete, Write
from llamactl.server.types import TaskStatus

__all__ = ["ATTEMPT_EVENT", "Handler", "Inbox", "InboxCounters"]

log = logging.getLogger(__name__)

_LEASE = 30.0


class FinishedCallback(Protocol):
    """The task reached a final status (``released``: its session's turn was freed in the same commit)."""

    def __call__(self, task: StoredTask, *, released: bool = False) -> Awaitable[None]: ...


ReleaseWrite = Callable[[str, str], Awaitable[Write | None]]
"""``(session_id, task_id)``: the write that frees the session's turn with the final commit, or None."""
ChangedCallback = Callable[[StoredTask], None]
SuspendedCallback = Callable[[StoredTask], Awaitable[None]]
"""The task was suspended at its question: hand it out again from there."""

_REPLICA_KINDS = frozenset(
    {
        WorkerMessageKind.REPLICA_UP,
        WorkerMessageKind.REPLICA_HEARTBEAT,
        WorkerMessageKind.REPLICA_STOPPING,
        WorkerMessageKind.REPLICA_FAILED,
    }
)
_FINAL_KIND = {
    WorkerMessageKind.TASK_COMPLETED: TaskStatus.COMPLETED,
    WorkerMessageKind.TASK_FAILED: TaskStatus.FAILED,
    WorkerMessageKind.TASK_CANCELLED: TaskStatus.CANCELLED,
}


class InboxCounters:
    """What the inbox threw away, and why (for /metrics)."""

    def __init__(self) -> None:
        self.late_results = 0
        """Final reports for a task that another attempt had finished already."""
        self.late_events = 0
        """Events for a task that had finished already."""
        self.superseded_events = 0
        """Events of an attempt after a newer attempt of its task had started (a worker that
        was taken for dead and ran on: its task had gone out again)."""


class Inbox:
    def __init__(
        self,
        records: ControlPlaneRecords,
        registry: ServiceRegistry,
        *,
        on_changed: ChangedCallback,
        on_finished: FinishedCallback,
        on_suspended: SuspendedCallback | None = None,
        release: ReleaseWrite | None = None,
        on_damaged: Callable[[StateStoreDamaged], None] | None = None,
    ) -> None:
        self._records = records
        self._registry = registry
        self._on_changed = on_changed
        """Called when a task's record or event log changed (wakes whoever waits on it)."""
        self._on_finished = on_finished
        self._on_suspended = on_suspended
        self._release = release
        self.deliveries = ReportDeliveries(lease=_LEASE, on_damaged=on_damaged)
        self.counters = InboxCounters()
        self.order = ReportOrder(records, lease=_LEASE)
        self.mirror: ReplicaMirror | None = None
        """Set when several control planes share the store: replica reports are shared through it."""

    async def consume(self, queue: MessageQueue, topic: str, handler: Handler) -> None:
        """Apply every delivery of ``topic`` with ``handler`` (see :class:`ReportDeliveries`; a
        report that comes before an earlier one of its task waits for it: :class:`ReportOrder`).
        Runs until cancelled."""
        await self.deliveries.consume(queue, topic, handler)

    async def close(self) -> None:
        await self.deliveries.close()

    # --- worker reports ------------------------------------------------------------------------

    async def handle_report(self, delivery: Delivery) -> None:
        msg = WorkerMessage.model_validate_json(delivery.message.payload)
        kind = msg.kind
        if kind in _REPLICA_KINDS:
            apply_replica_report(self._registry, msg)
            if self.mirror is not None:
                await self.mirror.record(msg)
        elif kind is WorkerMessageKind.TASK_STARTED:
            await self._task_started(msg)
        elif kind is WorkerMessageKind.TASK_EVENT:
            await self._task_event(msg, delivery)
        elif kind is WorkerMessageKind.TASK_ANSWER:
            await self._task_answer(msg)
        elif kind is WorkerMessageKind.TASK_SUSPENDED:
            await self._task_suspended(msg, delivery)
        else:
            await self._task_final(msg, _FINAL_KIND[kind], delivery)

    async def _task_started(self, msg: WorkerMessage) -> None:
        task, changed = await self._records.transition(
            _task_id(msg), lambda t: self._start(t, msg), lambda t: self._attempt_markers(t, msg)
        )
        if changed:
            self._on_changed(task)

    @staticmethod
    def _start(task: StoredTask, msg: WorkerMessage) -> bool:
        """Mark the task running on ``msg``'s attempt; False when it is already (or has ended)."""
        if task.status.is_final or (task.status is TaskStatus.RUNNING and task.attempts >= msg.attempt):
            return False
        task.status = TaskStatus.RUNNING
        task.dispatched = True
        task.waiting_for_answer = False  # a new attempt starts from the start
        task.replica_id = msg.replica_id
        task.started_at = task.started_at or (msg.at or time.time())
        return True

    async def _task_event(self, msg: WorkerMessage, delivery: Delivery) -> None:
        """Store a report's events (one in ``event``, or several in ``events``: a run that
        streamed faster than the queue confirmed) in the task's log, in one write."""
        task_id = _task_id(msg)
        events = [msg.event] if msg.event is not None else msg.events
        if not events or msg.event_index is None:
            raise ValueError("a task.event report needs event (or events) and event_index")
        first, last = msg.event_index, msg.event_index + len(events) - 1
        await self._wait_before(delivery, task_id, msg, first)
        task = await self._records.get_task(task_id)
        if task.status.is_final:
            self.counters.late_events += len(events)
            return
        if self._superseded(task, msg):
            self.counters.superseded_events += len(events)
            self.order.stored(task_id, msg.attempt, last)  # its successors need not wait
            return
        stream = self._records.events_stream(task_id)
        appends = [
            Append(stream, event_value(event, msg.attempt), event_msg_id(task_id, msg.attempt, first + i))
            for i, event in enumerate(events)
        ]
        kinds = [str(event.get("type", "")) for event in events]
        starts = task.status is not TaskStatus.RUNNING or task.attempts < msg.attempt
        # An event shows its attempt started, though its started report (sent first, applied
        # concurrently) may not be in yet; a question asked, or one answered: both stored with
        # the events. Not for a report applied before (its ack was lost): the events after it
        # have had their say since.
        if (
            starts or _waiting_after(task.waiting_for_answer, kinds) != task.waiting_for_answer
        ) and await self._records.store.find_idem(stream, appends[0].idem_key or "") is None:

            def mark(stored: StoredTask) -> bool:
                started = self._start(stored, msg)
                waiting = _waiting_after(stored.waiting_for_answer, kinds)
                if stored.status.is_final or (stored.waiting_for_answer is waiting and not started):
                    return False
                stored.waiting_for_answer = waiting
                return True

            task, changed = await self._records.transition(
                task_id, mark, lambda t: [*self._attempt_markers(t, msg), *appends]
            )
        else:
            changed = False
        if not changed:
            if len(appends) == 1:
                await self._records.store.append(stream, appends[0].value, idem_key=appends[0].idem_key)
            else:
                await self._records.store.commit(appends)
        self.order.stored(task_id, msg.attempt, last)
        self._on_changed(task)  # wakes whoever follows the task's events

    async def _task_answer(self, msg: WorkerMessage) -> None:
        """A worker's answer to "where is it?": only the latest is kept, beside the task's record
        (deleted with it), so a task asked any number of times keeps one."""
        task_id = _task_id(msg)
        if msg.event is None:
            raise ValueError("a task.answer report needs event")
        task = await self._records.get_task(task_id)
        if task.status.is_final:
            return  # nobody waits for it: the asker was told the task ended
        await self._records.store.put(self._records.where_ns, task_id, json.dumps(msg.event).encode())
        self._on_changed(task)  # wakes the asker

    async def _task_suspended(self, msg: WorkerMessage, delivery: Delivery) -> None:
        """Store where the run waited (its Context, its question, how far it read its inputs)
        and hand the task out again from there. A report of an attempt a newer one replaced, of a
        task that ended, or applied before, changes nothing."""
        task_id = _task_id(msg)
        if msg.context is None:
            raise ValueError("a task.suspended report needs context")
        await self._wait_before(delivery, task_id, msg, msg.event_index or 0)
        point = TaskResume(
            attempt=msg.attempt, context=msg.context, question=msg.event, inputs_from=msg.inputs_from
        )

        def suspend(task: StoredTask) -> bool:
            if task.status.is_final or self._superseded(task, msg) or task.resume_from >= msg.attempt:
                return False
            task.resume_from = msg.attempt
            return True

        task, changed = await self._records.transition(
            task_id,
            suspend,
            lambda t: [*self._attempt_markers(t, msg), self._records.resume_write(task_id, point)],
            feed=False,
        )
        self.order.forget(task_id)
        if changed and self._on_suspended is not None:
            log.info("task %s (attempt %d) goes on from its question on another worker", task_id, msg.attempt)
            await self._on_suspended(task)

    async def _task_final(self, msg: WorkerMessage, status: TaskStatus, delivery: Delivery) -> None:
        task_id = _task_id(msg)
        # ``event_index``: how many events the worker sent before this report (None: an older
        # worker that sent it only with trailing events: then nothing to wait for is known).
        await self._wait_before(delivery, task_id, msg, msg.event_index or 0)
        # The cached record, even from a store other servers write: a final one changes no more,
        # and a stale one fails its conditional write below, which reads the task again. A run
        # not stored yet is stored with this report.
        current = await self._records.current_task(task_id)
        if current is None:
            raise TaskNotFound(task_id, self._records.deployment)
        if current.status.is_final:
            await self._finished_before(current, msg)
            return

        def finish(task: StoredTask) -> bool:
            if task.status.is_final:
                return False
            task.status = status
            task.waiting_for_answer = False
            task.finished_at = msg.at or time.time()
            task.started_at = task.started_at or msg.started_at or task.finished_at
            task.replica_id = msg.replica_id
            task.dispatched = True
            if status is TaskStatus.COMPLETED:
                task.result = msg.result
            else:
                task.error = msg.error or ("cancelled" if status is TaskStatus.CANCELLED else "failed")
                task.traceback = msg.traceback
            return True

        # A session of its own keeps no Context: nobody would ever prune it.
        saved = None
        if msg.context is not None and not current.own_session:
            saved = self._records.contexts.write(current.session_id, msg.context)

        def writes(task: StoredTask) -> list[Write]:
            superseded = self._superseded(task, msg)  # its result wins, its trailing events do not
            out = self._attempt_markers(task, msg)
            if saved is not None:
                out.append(saved)
            if task.resume_from:
                out.append(Delete(self._records.resume_ns, task_id))
            if superseded:
                return out
            first = msg.event_index or 0
            stream = self._records.events_stream(task_id)
            for offset, event in enumerate(msg.events):
                idem = event_msg_id(task_id, msg.attempt, first + offset)
                out.append(Append(stream, event_value(event, msg.attempt), idem))
            return out

        stored: tuple[StoredTask, bool] | None = None
        own = current.own_session  # no session record to free
        release = await self._release(current.session_id, task_id) if self._release and not own else None
        if release is not None:
            freeing: Write = release
            with contextlib.suppress(ExtraConflict):  # a task was stored behind it: pass the turn after
                stored = await self._records.transition(
                    task_id, finish, lambda t: [*writes(t), freeing], extra_may_conflict=True
                )
        released = stored is not None and stored[1]
        task, changed = stored or await self._records.transition(task_id, finish, writes)
        if not changed:  # another server stored the task's end since this one cached it
            await self._finished_before(task, msg)
            return
        self.order.forget(task_id)
        if self._superseded(task, msg):
            self.counters.superseded_events += len(msg.events)
        if saved is not None:
            self._records.contexts.remember(task.session_id, msg.context, len(saved.value))
        self._on_changed(task)
        await self._on_finished(task, released=released)

    async def _finished_before(self, task: StoredTask, msg: WorkerMessage) -> None:
        """A final report for a task already final: a report applied before (redelivered), or a
        late one from an attempt whose lease had moved on. The first result won; either way the
        session must have moved on."""
        self.order.forget(task.task_id)
        if msg.attempt != task.attempts or msg.replica_id != task.replica_id:
            self.counters.late_results += 1
            log.info("ignoring a late result of task %s (attempt %d)", task.task_id, msg.attempt)
        await self._on_finished(task)

    async def _wait_before(self, delivery: Delivery, task_id: str, msg: WorkerMessage, index: int) -> None:
        """Wait for the report's predecessors of its attempt, unless a newer attempt replaced it
        (its reports are dropped: their order does not matter)."""
        if self.order.in_order(task_id, msg.attempt, index):
            return
        if not self._superseded(await self._records.peek_task(task_id), msg):
            await self.order.wait_before(delivery, task_id, msg.attempt, index)

    @staticmethod
    def _superseded(task: StoredTask, msg: WorkerMessage) -> bool:
        """True when a newer attempt of the task has started than the one ``msg`` reports on.

        A worker taken for dead (stopped, say, past the broker's heartbeat wait) may run on once
        its task has gone out again: the log then holds each attempt's events from its marker
        on, not the two interleaved. Its result is still taken if it comes first (the broker
        settles the task's message with whichever result comes first; the other is dropped).
        """
        return msg.attempt < task.attempts

    def _attempt_markers(self, task: StoredTask, msg: WorkerMessage) -> list[Write]:
        """Log markers for the attempts this report reveals, and the record's attempt count."""
        seen, now = task.attempts, msg.attempt
        task.attempts = max(seen, now)
        return self._markers(task, seen, now, msg.replica_id, resumed=msg.resumed)

    def _markers(
        self, task: StoredTask, seen: int, now: int, replica_id: str | None, *, resumed: bool = False
    ) -> list[Write]:
        return attempt_markers(
            self._records.events_stream(task.task_id), task, seen, now, replica_id, resumed=resumed
        )

    # --- dead letters and removed services -------------------------------------------------------

    async def handle_dead_letter(self, delivery: Delivery) -> None:
        """A task whose start message failed ``max_attempts`` times: its worker kept dying."""
        message = TaskMessage.model_validate_json(delivery.message.payload)
        headers = delivery.message.headers
        deliveries = int(headers.get("x-attempts", "0") or 0)
        failures = headers.get("x-failures", headers.get("x-attempts", "?"))
        reason = headers.get("x-dead-reason", "its worker stopped before finishing")
        error = (
            f"gave up after {failures} failed attempts: {reason} (the '{message.service_id}' worker "
            "crashed, was killed or stalled while running this task, alone, each time)"
        )
        await self._fail(message.task_id, error, deliveries)

    async def handle_removed(self, delivery: Delivery) -> None:
        """A task published to a service that the deployment no longer has."""
        message = TaskMessage.model_validate_json(delivery.message.payload)
        await self._fail(
            message.task_id,
            f"its service '{message.service_id}' was removed from the deployment before the task ran",
            0,
        )

    async def _fail(self, task_id: str, error: str, deliveries: int) -> None:
        def fail(task: StoredTask) -> bool:
            if task.status.is_final:
                return False
            task.status = TaskStatus.FAILED
            task.finished_at = time.time()
            task.started_at = task.started_at or (task.finished_at if deliveries else None)
            task.error = error
            return True

        def markers(task: StoredTask) -> list[Write]:
            seen = task.attempts
            task.attempts = max(seen, deliveries)
            return self._markers(task, seen, task.attempts, None)

        task, changed = await self._records.transition(task_id, fail, markers)
        if changed:
            self._on_changed(task)
        await self._on_finished(task)


def _task_id(msg: WorkerMessage) -> str:
    if not msg.task_id:
        raise ValueError(f"a {msg.kind} report needs a task_id")
    return msg.task_id


def _waiting_after(waiting: bool, kinds: list[str]) -> bool:
    """Whether a run waits for a person's answer after events of ``kinds``, in order."""
    for kind in kinds:
        waiting = waits_for_answer_after(waiting, kind)
    return waiting
