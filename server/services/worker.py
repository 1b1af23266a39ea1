"""The worker loop: take a service's tasks from the message queue, run them, report to the control plane.

See :mod:`llamactl.server.protocol` for what goes on which topic. One :class:`Worker` serves one replica:
up to ``spec.max_concurrency`` tasks at once, each under a lease it keeps extending, each
listening to its own input stream (human in the loop, cancel), each ending in exactly one final
message (task.completed / task.failed / task.cancelled) before its delivery is acked.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from pydantic import ValidationError

from llamactl.server.errors import TooManyEvents
from llamactl.server.mq import topics
from llamactl.server.mq.base import Delivery, MessageQueue
from llamactl.server.protocol import (
    TASK_WHERE,
    TaskInput,
    TaskMessage,
    WorkerMessage,
    WorkerMessageKind,
    answer_msg_id,
    event_msg_id,
    task_of_start_msg_id,
)
from llamactl.server.services.spec import WorkerSpec

from .adapters import Runnable
from .concurrency import AdaptiveLimit, Slot
from .errorinfo import error_line
from .event_pipe import BATCH_BYTES, EventPipe
from .execution import TaskOutcome, execute
from .replacement import REPLACE_GRACE, ReplaceCheck
from .reporter import Reporter
from .runs import Runs
from .task_timers import LeaseKeeper, StartedReport
from .watchdog import LoopWatchdog

__all__ = ["Worker"]

log = logging.getLogger(__name__)

_INPUTS_AFTER = 0.02
"""Seconds a task runs before it listens for events sent in (and cancel requests)."""
_STOPPING_NOTICE_TIMEOUT = 1.0
"""Seconds a stopping replica gives its goodbye to the control plane to go out."""
_RUNS = itertools.count(1)
"""Numbers the runs of this process: a workflow run's id must be new to the process (the library
keeps a run's id taken while anything holds the run, and a task handed out again, or resumed
after it asked a question, runs again here under the same attempt)."""


class Worker:
    """Serves one replica of a service over a :class:`MessageQueue` (already started)."""

    def __init__(
        self,
        spec: WorkerSpec,
        queue: MessageQueue,
        runnable: Runnable,
        *,
        watchdog: LoopWatchdog | None = None,
    ) -> None:
        self.spec = spec
        self.watchdog = watchdog
        self.queue = queue
        self.runnable = runnable
        self.reporter = Reporter(spec, queue)
        self.service_topic = topics.service_topic(spec.deployment, spec.service_id)
        self._stopping = False
        self._limit = AdaptiveLimit(spec.max_concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._starting: dict[str, StartedReport] = {}
        """Running tasks by id, with their (maybe unsent) task.started reports."""
        self._runs = Runs()
        self._taker: asyncio.Task[None] | None = None
        self._replace_check = ReplaceCheck(spec)
        self.replacing = False
        """It asked to be replaced (see :meth:`_check_replace`): its process exits with ``EXIT_REPLACE``."""

    @property
    def limit(self) -> int:
        """How many tasks it starts at once right now (see :mod:`.concurrency`)."""
        return self._limit.limit

    @property
    def in_flight(self) -> int:
        """Tasks running right now."""
        return len(self._tasks)

    def request_stop(self) -> None:
        """Stop taking deliveries; :meth:`serve` returns once the in-flight tasks are done (those
        that wait for a person's answer are put back at once: see :mod:`.runs`)."""
        self._stopping = True
        if self._taker is not None:
            self._taker.cancel()  # see _take: a delivery it was waiting for goes back unused
        self._runs.stop()

    def abort(self) -> None:
        """Cancel the in-flight tasks too (their deliveries are not acked and come back)."""
        self.request_stop()
        for task in self._tasks:
            task.cancel()

    def message(self, kind: WorkerMessageKind, **fields: Any) -> WorkerMessage:
        """A WorkerMessage of this replica, stamped now, with the current in-flight count."""
        return self.reporter.message(kind, in_flight=self.in_flight, **fields)

    def unsent_started_reports(self) -> list[tuple[str, bytes, str, str]]:
        """The task.started reports not sent yet, taken over by whoever asks (the watchdog's
        thread, while this worker's loop is blocked): ``(topic, payload, msg_id, key)``."""
        out = []
        for report in list(self._starting.values()):
            msg = report.take_over()
            if msg is not None:
                out.append(
                    (self.reporter.topic, msg.model_dump_json().encode(), report.msg_id, msg.task_id or "")
                )
        return out

    async def publish(self, msg: WorkerMessage, *, msg_id: str | None = None) -> None:
        """Publish ``msg`` on the control topic."""
        await self.reporter.publish(msg, msg_id=msg_id)

    async def serve(self) -> None:
        """Consume and run tasks until :meth:`request_stop`; then publish replica.stopping and drain."""
        consumer = self.queue.consume(
            self.service_topic, prefetch=self._limit.prefetch, lease=self.spec.lease
        )
        heartbeat = asyncio.create_task(self._heartbeat(), name="heartbeat")
        taker = self._taker = asyncio.create_task(self._take(consumer), name="take")
        if self._stopping:
            taker.cancel()
        try:
            await asyncio.wait({taker})
            if not taker.cancelled() and (exc := taker.exception()) is not None:
                raise exc
            log.info("stopping: no new tasks; %d in flight", self.in_flight)
            await self._say_stopping()
            while self._tasks:
                await asyncio.wait(set(self._tasks))
        finally:
            heartbeat.cancel()
            taker.cancel()
            await asyncio.wait({heartbeat, taker})
            self._limit.close()
            with contextlib.suppress(Exception):
                # Ends the subscription; deliveries it still buffered go back without an attempt.
                await consumer.aclose()  # type: ignore[attr-defined]

    def _check_replace(self, own: int = 0) -> None:
        """Stop taking tasks once this worker holds what only its end frees (sync calls that run
        on after their tasks ended, memory over the service's ``max-memory``: see
        :mod:`.replacement`): it ends once its running tasks have (``own`` of them: the caller's),
        and the supervisor starts a fresh one."""
        if self._stopping or (reason := self._replace_check.reason()) is None:
            return
        others = self.in_flight - own
        log.warning(
            "%s: this worker takes no new task, and is replaced %s",
            reason,
            f"once its {others} other running task(s) end (within {REPLACE_GRACE:g} s)" if others else "now",
        )
        self.replacing = True
        self.request_stop()
        asyncio.get_running_loop().call_later(REPLACE_GRACE, self._replace_now)

    def _replace_now(self) -> None:
        if self._tasks:
            log.warning("stopping %d task(s) still running: they run again elsewhere", len(self._tasks))
            self.abort()

    async def _say_stopping(self) -> None:
        """Tell the control plane that this replica stops, if the queue takes it at once: it is a
        courtesy (the control plane learns it from the heartbeats that stop), and a stop must not
        wait for a queue that does not answer, past its grace and into a SIGKILL."""
        if self.queue.outage is not None:
            return
        with contextlib.suppress(Exception):
            async with asyncio.timeout(_STOPPING_NOTICE_TIMEOUT):
                await self.publish(self.message(WorkerMessageKind.REPLICA_STOPPING))

    async def _take(self, consumer: AsyncIterator[Delivery]) -> None:
        """Start a task per delivery while there is a free slot, until the stream ends.

        :meth:`request_stop` cancels this. That cancel can only land at an ``await``: in the slot
        wait, or inside the consumer before it hands a delivery over, where the consumer gives
        its buffered deliveries back. A delivery is never half taken.
        """
        iterator = aiter(consumer)
        while True:
            slot = await self._limit.acquire()
            try:
                delivery = await anext(iterator)
            except StopAsyncIteration:
                slot.release()
                log.warning("the task stream ended")
                return
            except BaseException:
                slot.release()
                raise
            slot.begin()
            task = asyncio.create_task(self._handle(delivery, slot), name=f"delivery-{delivery.lease_id}")
            self._tasks.add(task)
            task.add_done_callback(functools.partial(self._done, slot=slot))

    def _done(self, task: asyncio.Task[None], *, slot: Slot) -> None:
        self._tasks.discard(task)
        slot.release()
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("handling a delivery failed: %s", error_line(exc), exc_info=exc)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.spec.heartbeat_interval)
            self._check_replace()  # memory also grows while tasks run, or none does
            try:
                await self.publish(
                    self.message(WorkerMessageKind.REPLICA_HEARTBEAT, concurrency_limit=self.limit)
                )
            except Exception as exc:
                if self.queue.outage is None:  # an unreachable broker is said by the queue, once
                    log.warning("heartbeat not published: %s", error_line(exc))

    async def _inputs(self, task: TaskMessage, position: list[int]) -> AsyncIterator[TaskInput]:
        # Most tasks finish within milliseconds and never get an event or a cancel: execute()
        # opens this only for a task still running after _INPUTS_AFTER. Reading from seq 0 (a
        # resumed run: from the first its suspended attempt had not read) means nothing sent in
        # the meantime is missed. ``position[0]``: the seq after the last input handed out.
        topic = topics.task_input_topic(task.deployment, task.task_id)
        subscription = self.queue.subscribe(topic, from_seq=position[0])
        try:
            async for msg in subscription:
                position[0] = msg.seq + 1
                try:
                    yield TaskInput.model_validate_json(msg.payload)
                except ValidationError as exc:
                    log.warning("ignoring a malformed input of task %s: %s", task.task_id, exc)
        finally:
            with contextlib.suppress(Exception):
                await subscription.aclose()  # type: ignore[attr-defined]

    def _event_pipe(self, task_id: str, attempt: int, ids: dict[str, Any]) -> EventPipe:
        """Where a run's events go: each one's report alone, or several in one report."""

        async def one(index: int, payload: bytes) -> None:
            await self.reporter.publish_payload(
                payload, msg_id=event_msg_id(task_id, attempt, index), key=task_id
            )

        async def many(index: int, envelopes: list[dict[str, Any]]) -> None:
            msg = self.message(WorkerMessageKind.TASK_EVENT, events=envelopes, event_index=index, **ids)
            await self.reporter.publish_encoded(
                msg, self.reporter.encode(msg), msg_id=event_msg_id(task_id, attempt, index)
            )

        # Each event's report alone fits max-result-size: a batch counted by those stays within it.
        batch_bytes = min(BATCH_BYTES, self.spec.max_result_size)
        return EventPipe(one, many, ordered=self.queue.ordered_publishes, batch_bytes=batch_bytes)

    async def _handle(self, delivery: Delivery, slot: Slot) -> None:
        try:
            task = TaskMessage.model_validate_json(delivery.message.payload)
        except ValidationError as exc:
            await self._reject(delivery, exc)
            return
        resume = task.resume
        # A resumed task's attempts go on from the one it resumes (its message is a new one).
        attempt = delivery.attempt + (resume.attempt if resume is not None else 0)
        resumed = resume is not None and self._can_resume(task.task_id, resume.context)
        handler = asyncio.current_task()
        assert handler is not None
        suspend = self._runs.begin(task.task_id, attempt)
        position = [resume.inputs_from if resume is not None and resumed else 0]
        keeper = LeaseKeeper(self, delivery)
        ids = {"task_id": task.task_id, "session_id": task.session_id, "attempt": attempt}
        started = StartedReport(self, {**ids, "resumed": resumed}, f"{task.task_id}:{attempt}:started")
        self._starting[task.task_id] = started
        events = self._event_pipe(task.task_id, attempt, ids)
        started_at = time.time()
        timeout = task.timeout if task.timeout is not None else self.spec.timeout
        # The watchdog's key: an older attempt of the task still ending here must not untrack this one.
        run_id = f"{task.task_id}:{attempt}:{next(_RUNS)}"
        if self.watchdog is not None:
            self.watchdog.track(run_id, timeout)
        try:
            log.debug("task %s (attempt %d) started", task.task_id, attempt)
            if attempt > 1:
                # A retry: its record says so before the code that may have killed the last
                # worker runs again (a quick first run reports nothing until its result).
                started.now()
                await started.settle()
            index = 0
            trailing: list[dict[str, Any]] = []

            async def emit(envelope: dict[str, Any], *, last: bool = False) -> None:
                nonlocal index
                if last:
                    # The run's final event (a StopEvent) rides with the final report.
                    trailing.append(envelope)
                    return
                if envelope.get("type") == TASK_WHERE:
                    # An answer, not one of the task's events: outside their order and their count.
                    answer = self.message(WorkerMessageKind.TASK_ANSWER, event=envelope, **ids)
                    await self.publish(
                        answer, msg_id=answer_msg_id(task.task_id, envelope["value"]["input_id"])
                    )
                    return
                self._check_event_count(task.task_id, index)
                msg = self.message(WorkerMessageKind.TASK_EVENT, event=envelope, event_index=index, **ids)
                payload = self.reporter.encode(msg)  # too large: raised here, in the run
                started.now()  # its task was made first: the started report goes out before the event
                await events.send(index, envelope, payload)
                index += 1

            outcome = await execute(
                self.runnable,
                kwargs=task.input,
                context=resume.context if resume is not None and resumed else task.context,
                emit=emit,
                inputs=self._inputs(task, position),
                inputs_after=_INPUTS_AFTER,
                timeout=timeout,
                keep_context=task.keep_context,
                label=f"task {task.task_id} (attempt {attempt})",
                on_asking=functools.partial(self._runs.asking, handler),
                suspend=suspend,
                ask_first=resume.question if resume is not None and resumed else None,
                run_id=run_id,
            )
            self._runs.forget(task.task_id)  # done running: a newer attempt leaves its report be
            await events.drain()  # the report counts them: they are confirmed first
            await started.settle()
            if outcome.kind is WorkerMessageKind.TASK_SUSPENDED:
                await self._report_suspended(delivery, outcome, ids, inputs_from=position[0], index=index)
                return
            final = self.message(
                outcome.kind,
                result=outcome.result,
                context=outcome.context,
                error=outcome.error,
                traceback=outcome.traceback,
                started_at=started_at,
                events=trailing,
                event_index=index,  # the events sent before: the control plane waits for them
                **ids,
            )
            # The slot is free once the report leaves: its confirmation is the server's work, and
            # the credit going back with it brings the next task while this one waits for it.
            slot.release()
            await self.reporter.final(delivery, final)
            if outcome.error:
                log.info("task %s: %s (%s)", task.task_id, outcome.kind, outcome.error)
            else:
                log.debug("task %s: %s", task.task_id, outcome.kind)
            self._replace_check.task_ended()
            self._check_replace(own=1)  # this task's handler is still counted
        except Exception as exc:
            # The queue failed us (a report was not confirmed): give the delivery back so that it
            # runs again (here or on another replica), and the slot's credit with it.
            log.error("task %s not reported: %s; it will run again", task.task_id, error_line(exc))
            with contextlib.suppress(Exception):
                await delivery.nack(delay=1.0)
            return
        finally:
            if self._starting.get(task.task_id) is started:
                del self._starting[task.task_id]
            self._runs.forget(task.task_id)
            if self.watchdog is not None:
                self.watchdog.untrack(run_id)
            events.cancel()
            await keeper.stop()
            started.discard()

    def _can_resume(self, task_id: str, context: dict[str, Any] | None) -> bool:
        """Whether a resumed task can go on from its saved question here; if not, it runs from its
        start (its marker says so; the log here says why)."""
        reason = "its saved Context was lost" if context is None else self.runnable.cannot_resume(context)
        if reason is not None:
            log.warning("task %s runs again from its start, not from its question: %s", task_id, reason)
        return reason is None

    async def _report_suspended(
        self, delivery: Delivery, outcome: TaskOutcome, ids: dict[str, Any], *, inputs_from: int, index: int
    ) -> None:
        """Report a run stopped at its question (``outcome``) with its delivery's ack (see
        :meth:`Reporter.suspended`)."""
        msg = self.message(
            WorkerMessageKind.TASK_SUSPENDED,
            context=outcome.context,
            event=outcome.question,
            inputs_from=inputs_from,
            event_index=index,  # the events sent before: the control plane applies it after them
            **ids,
        )
        await self.reporter.suspended(delivery, msg)

    def _check_event_count(self, task_id: str, index: int) -> None:
        """Raises TooManyEvents (into the run, which then fails) for an event past ``max-events``."""
        if index >= self.spec.max_events:
            raise TooManyEvents(task_id, self.spec.max_events, self.spec.service_id)

    async def _reject(self, delivery: Delivery, exc: ValidationError) -> None:
        """A start message that is not a task: fail its task (named by its id) instead of dropping it."""
        msg_id = delivery.message.msg_id
        task_id = task_of_start_msg_id(msg_id)
        log.error("a malformed task message %s: %s", msg_id, error_line(exc))
        if task_id is None:
            with contextlib.suppress(Exception):
                await delivery.ack()  # not a task of ours at all: nobody waits for it
            return
        failed = self.message(
            WorkerMessageKind.TASK_FAILED,
            task_id=task_id,
            attempt=delivery.attempt,
            error=f"the '{self.spec.service_id}' worker could not read the task message: {error_line(exc)}",
        )
        try:
            await self.reporter.final(delivery, failed)
        except Exception as report_exc:
            log.error("could not report the malformed task %s: %s", task_id, error_line(report_exc))
            with contextlib.suppress(Exception):
                await delivery.nack(delay=1.0)
