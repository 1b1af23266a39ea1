"""Run one task to its outcome: inputs in (events, cancel), events out, timeout, errors as results.

This knows nothing about the message queue: :func:`execute` takes the task's inputs as an async
iterator and hands each streamed event to ``emit``, so it is tested without a broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from llamactl.server.errors import ContextNotSaved, TooManyEvents
from llamactl.server.protocol import (
    EVENT_DELIVERED,
    EVENT_REJECTED,
    TASK_WHERE,
    TaskInput,
    TaskInputKind,
    WorkerMessageKind,
    waits_for_answer_after,
)

from .adapters import Emit, Run, Runnable, TaskInputError
from .containment import running_task_code
from .encoding import to_jsonable
from .errorinfo import error_line, traceback_summary
from .stopping import abandon, is_abandoned, stop_run
from .where import describe

__all__ = ["CANCEL_GRACE", "Suspend", "TaskOutcome", "execute", "where_running"]

log = logging.getLogger(__name__)

CANCEL_GRACE = 5.0
"""Seconds a run gets to stop on its own after a cancel or timeout before its task is cancelled."""

_RUNNING: dict[str, Run] = {}
"""The runs in progress in this process, by the label :func:`execute` was given."""


def where_running() -> list[tuple[str, str, str | None]]:
    """(label, where, stacks) of each run in progress: :func:`~.where.describe` of its place."""
    return [(label, *_where(run, "Where it is now")) for label, run in _RUNNING.items()]


class Suspend:
    """Set to suspend a run that waits for a person's answer (see :func:`execute`): a future
    per run, no task waiting on it (most runs never see it set)."""

    def __init__(self) -> None:
        self.future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def set(self) -> None:
        if not self.future.done():
            self.future.set_result(None)

    def rearm(self) -> None:
        """Taken while the run did not wait: the next :meth:`set` counts again."""
        self.future = asyncio.get_running_loop().create_future()


@dataclass(slots=True)
class TaskOutcome:
    """How a task ended: ``kind`` is task.completed, task.failed or task.cancelled; or
    task.suspended (see ``suspend`` of :func:`execute`)."""

    kind: WorkerMessageKind
    result: Any = None
    context: dict[str, Any] | None = None
    error: str | None = None
    traceback: str | None = None
    question: dict[str, Any] | None = None
    """For task.suspended: the event that asked (None when its Context could not be saved:
    then ``context`` is None too, and the task can only run again from its start)."""


def _failed(
    exc: BaseException, context: dict[str, Any] | None, *, with_traceback: bool = True
) -> TaskOutcome:
    return TaskOutcome(
        WorkerMessageKind.TASK_FAILED,
        context=context,
        error=error_line(exc),
        traceback=traceback_summary(exc) if with_traceback else None,
    )


async def _pump(
    inputs: AsyncIterator[TaskInput], run: Run, cancel: asyncio.Future[None], emits: _OneAtATime
) -> None:
    """Hand the task's inputs to the run: a cancel sets ``cancel``; an answer the pump streams past
    the service's ``max-events`` sets it with that TooManyEvents (the run is stopped and fails, as
    when its own event is one too many) instead of ending the pump, so later cancels still come."""
    try:
        await _pump_inputs(inputs, run, cancel, emits)
    except TooManyEvents as exc:
        if not cancel.done():
            cancel.set_exception(exc)


async def _pump_inputs(
    inputs: AsyncIterator[TaskInput], run: Run, cancel: asyncio.Future[None], emits: _OneAtATime
) -> None:
    emit = emits.pump
    async for item in inputs:
        if item.kind is TaskInputKind.CANCEL:
            if not cancel.done():
                cancel.set_result(None)
            return
        if item.kind is TaskInputKind.WHERE:
            at, stacks = _where(run, "Where it is now")
            if emits.asking:
                # On workflows 1.x the step that asked stays in progress while it waits: it is
                # named after what the task waits for, not instead of it.
                at = ", waiting for a person's answer to the question it asked (its InputRequiredEvent)" + at
            value = {"input_id": item.input_id, "where": at.removeprefix(", "), "stacks": stacks}
            await emit({"value": value, "type": TASK_WHERE, "qualified_name": f"llamactl.{TASK_WHERE}"})
            continue
        if item.event_obj_str is None:
            log.warning("ignoring an event input without event_obj_str")
            continue
        try:
            await run.send_event(item.event_obj_str)
        except Exception as exc:
            error = str(exc) if isinstance(exc, TaskInputError) else error_line(exc)
            log.warning("could not deliver an event sent into the task: %s", error)
            outcome = {"type": EVENT_REJECTED, "error": error}
        else:
            # The run has the answer from now on: a suspend must not take its Context for one
            # still waiting (the inputs the next run is given skip this one).
            emits.answered()
            outcome = {"type": EVENT_DELIVERED}
        if item.input_id is not None:
            # The sender waits for this (ControlPlane.send_event): it reads it from the task's log.
            kind = outcome.pop("type")
            value = {"input_id": item.input_id, "event": _event_name(item.event_obj_str), **outcome}
            await emit({"value": value, "type": kind, "qualified_name": f"llamactl.{kind}"})


def _event_name(event_obj_str: str) -> str | None:
    try:
        name = json.loads(event_obj_str).get("qualified_name")
    except (ValueError, AttributeError):
        return None
    return name if isinstance(name, str) else None


class _OneAtATime:
    """``emit`` for the run and the input pump together: one event at a time, and none from the
    pump once the run has streamed its last (that one goes out with the result, after all others).

    It also follows whether the run waits for a person's answer: its last event asked a question
    (an InputRequiredEvent, kept in ``question``) and no event sent in has reached it since;
    ``on_asking`` hears each change."""

    def __init__(self, emit: Emit, on_asking: Callable[[bool], None] | None = None) -> None:
        self._emit = emit
        self._lock = asyncio.Lock()
        self._ended = False
        self._on_asking = on_asking
        self.asking = False
        self.question: dict[str, Any] | None = None
        self.suspended = False
        """Set when the run is suspended, or left running after its task ended (see stopping.py):
        what it streams then is not its task's events."""

    def answered(self) -> None:
        """An event sent in reached the run."""
        self._asks(False)

    async def run(self, envelope: dict[str, Any], *, last: bool = False) -> None:
        if self.suspended:
            return
        async with self._lock:
            self._ended = self._ended or last
            await self._emit(envelope, last=last)
            asking = not last and waits_for_answer_after(self.asking, str(envelope.get("type", "")))
            if asking and not self.asking:
                self.question = envelope
            self._asks(asking)

    async def pump(self, envelope: dict[str, Any], *, last: bool = False) -> None:
        async with self._lock:
            if not self._ended:
                await self._emit(envelope)
                if envelope.get("type") == EVENT_DELIVERED:
                    self._asks(False)

    def _asks(self, asking: bool) -> None:
        if asking != self.asking:
            self.asking = asking
            if self._on_asking is not None:
                self._on_asking(asking)


async def _first_done(futures: tuple[asyncio.Future[Any], ...], timeout: float | None) -> None:
    """Return once one of ``futures`` is done, or after ``timeout`` seconds: ``asyncio.wait`` with
    FIRST_COMPLETED, less what its generality costs each run (these are futures already, and
    nobody needs the done and pending sets)."""
    loop = asyncio.get_running_loop()
    woke: asyncio.Future[None] = loop.create_future()

    def wake(_: object) -> None:
        if not woke.done():
            woke.set_result(None)

    for future in futures:
        future.add_done_callback(wake)
    timer = None if timeout is None else loop.call_later(timeout, wake, None)
    try:
        await woke
    finally:
        if timer is not None:
            timer.cancel()
        for future in futures:
            future.remove_done_callback(wake)


def _where(run: Run, header: str) -> tuple[str, str | None]:
    """``describe(run.where(), header)``; nothing when looking fails."""
    try:
        return describe(run.where(), header=header)
    except Exception as exc:
        log.warning("could not tell where a task's code is: %s", error_line(exc))
        return "", None


async def _asking_first(emits: _OneAtATime, question: dict[str, Any], run: Run) -> Any:
    await emits.run(question)
    return await run.wait()


def _suspended_at(run: Run, emits: _OneAtATime) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(Context, question) of a run that waits for an answer; (None, None) when its Context
    does not serialize (it then runs again from its start)."""
    try:
        context = run.context(resumable=True)
    except ContextNotSaved as exc:
        log.warning("a task waiting for an answer runs again from its start: %s", exc)
        return None, None
    return (context, emits.question) if context is not None else (None, None)


def _no_context() -> dict[str, Any] | None:
    return None


def _saver(run: Run) -> tuple[Callable[[], dict[str, Any] | None], list[ContextNotSaved]]:
    """``run.context`` that says None when the Context does not serialize, and the list where
    it keeps why (a completed task fails with it; any other outcome stands, without a Context)."""
    unsaved: list[ContextNotSaved] = []

    def saved() -> dict[str, Any] | None:
        try:
            return run.context()
        except ContextNotSaved as exc:
            log.warning("%s", exc)
            unsaved.append(exc)
            return None

    return saved, unsaved


async def execute(
    runnable: Runnable,
    *,
    kwargs: dict[str, Any],
    context: dict[str, Any] | None,
    emit: Emit,
    inputs: AsyncIterator[TaskInput] | None = None,
    inputs_after: float = 0.0,
    timeout: float | None = None,
    cancel_grace: float = CANCEL_GRACE,
    keep_context: bool = True,
    label: str | None = None,
    on_asking: Callable[[bool], None] | None = None,
    suspend: Suspend | None = None,
    ask_first: dict[str, Any] | None = None,
    run_id: str | None = None,
) -> TaskOutcome:
    """Run one task and return its outcome; never raises for anything the user code does.

    A cancel input stops the run (task.cancelled); passing ``timeout`` seconds fails it with
    ``TimeoutError: timed out after N s``. The Context is returned with every outcome it exists
    for (unchanged input Context if the run could not even start). ``inputs`` is read only once
    the run has lasted ``inputs_after`` seconds: most tasks end sooner and never open it
    (nor close it: ``inputs`` must hold nothing until it is first read, as an async generator does).
    ``keep_context=False`` skips serializing the Context at the end (nobody will run in it again).
    With ``label``, the run is among :func:`where_running` while it runs. ``on_asking(True)``
    when the run starts to wait for a person's answer, ``on_asking(False)`` when it stops.

    ``suspend`` set while the run waits for an answer stops it with task.suspended: its Context
    as it waited and the question (the inputs are read no further; the caller knows how far it
    gave them). Set while it does not wait, it is rearmed and the run goes on. ``ask_first``: a
    question streamed before anything else, for a run resumed from a suspended one's Context
    (restored, it waits without asking again). ``run_id``: the run's id, where it has one (see
    :meth:`~.adapters.Runnable.start`).
    """
    emits = _OneAtATime(emit, on_asking)
    with running_task_code() as code:  # what the run's code raises or starts cannot stop the worker
        try:
            run = runnable.start(kwargs, context, emits.run, run_id)
            saved, unsaved = _saver(run) if keep_context else (_no_context, [])
        except TypeError as exc:
            return _failed(exc, context, with_traceback=False)
        except Exception as exc:
            return _failed(exc, context)
        except (SystemExit, KeyboardInterrupt) as exc:
            return _failed(code.exited(exc), context)
        body = run.wait() if ask_first is None else _asking_first(emits, ask_first, run)
        main = asyncio.create_task(body, name="task-run")
    if label is not None:
        _RUNNING[label] = run
    loop = asyncio.get_running_loop()
    cancel: asyncio.Future[None] = loop.create_future()
    pump: asyncio.Task[None] | None = None
    opener: asyncio.TimerHandle | None = None

    def open_inputs() -> None:
        nonlocal pump
        if inputs is not None and not main.done():
            pump = asyncio.create_task(_pump(inputs, run, cancel, emits), name="task-inputs")

    if inputs is not None:
        if inputs_after > 0:
            opener = loop.call_later(inputs_after, open_inputs)
        else:
            open_inputs()
    stopped_by: str | None = None
    at, stacks = "", None
    suspended: tuple[dict[str, Any] | None, dict[str, Any] | None] | None = None
    deadline = None if timeout is None else loop.time() + timeout
    try:
        while True:
            waits = (
                (main, cancel, code.stopped)
                if suspend is None
                else (main, cancel, code.stopped, suspend.future)
            )
            left = None if deadline is None else max(0.0, deadline - loop.time())
            await _first_done(waits, left)
            if suspend is None or not suspend.future.done() or main.done() or cancel.done():
                break
            if emits.asking:
                if pump is not None:  # no input taken after the Context is: the next run reads it
                    pump.cancel()
                    await asyncio.wait({pump})
                suspended = _suspended_at(run, emits)
                emits.suspended = True
                stopped_by = "suspend"
                await stop_run(run, main, cancel_grace, label)
                break
            suspend.rearm()  # an answer beat the stop: the run goes on, and may ask again
        if not main.done() and stopped_by is None:
            if cancel.done():
                stopped_by = "cancel" if cancel.exception() is None else "events"
            else:
                stopped_by = "exit" if code.stopped.done() else "timeout"
            if stopped_by == "timeout":
                at, stacks = _where(run, "Where it was at the timeout")
            if await stop_run(run, main, cancel_grace, label):
                emits.suspended = True  # what the code left running streams is not the task's
    finally:
        if label is not None:
            _RUNNING.pop(label, None)
        if opener is not None:
            opener.cancel()
        if cancel.done():
            cancel.exception()  # taken, whether the run ended first or not
        cancel.cancel()
        code.stopped.cancel()
        if pump is not None and not pump.done():
            pump.cancel()
        if not main.done() and not is_abandoned(main):  # only when execute itself is being cancelled
            main.cancel()
            await asyncio.wait({main}, timeout=cancel_grace)
            if not main.done():
                emits.suspended = True
                abandon(main, label, cancel_grace)
        # asyncio.wait costs a loop turn even when everything is done already: skip it then.
        if pump is not None and not pump.done():
            await asyncio.wait({pump})
        # Inputs never opened were never started: closing them would do nothing but cost the call.
        if pump is not None and (aclose := getattr(inputs, "aclose", None)) is not None:
            with contextlib.suppress(Exception):
                await aclose()
        if pump is not None and not pump.cancelled() and (pump_exc := pump.exception()) is not None:
            log.warning("reading the task's inputs failed: %s", error_line(pump_exc))
    # Taken in every case: a run stopped by a cancel, a timeout or an exit may end with what its
    # stop raised (a workflow's WorkflowCancelledByUser), which asyncio would log as never taken.
    run_exc = None if not main.done() or main.cancelled() else main.exception()
    if code.escaped is not None:
        return _failed(code.escaped, saved())
    if suspended is not None:
        context, question = suspended
        return TaskOutcome(WorkerMessageKind.TASK_SUSPENDED, context=context, question=question)
    if stopped_by == "cancel":
        return TaskOutcome(WorkerMessageKind.TASK_CANCELLED, context=saved())
    if stopped_by == "events" and (too_many := cancel.exception()) is not None:
        return _failed(too_many, saved(), with_traceback=False)
    if stopped_by == "timeout":
        error = f"TimeoutError: timed out after {timeout:g} s{at}"
        return TaskOutcome(WorkerMessageKind.TASK_FAILED, context=saved(), error=error, traceback=stacks)
    if main.cancelled():
        return TaskOutcome(WorkerMessageKind.TASK_CANCELLED, context=saved())
    if run_exc is not None:
        return _failed(run_exc, saved())
    result = to_jsonable(main.result())
    context = saved()
    if unsaved:  # the session's next task would go on without what this one did: say so
        return _failed(unsaved[0], None, with_traceback=False)
    return TaskOutcome(WorkerMessageKind.TASK_COMPLETED, result=result, context=context)
