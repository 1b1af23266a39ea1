"""One interface over everything a service may point at.

:func:`adapt` accepts:

* a ``workflows.Workflow`` instance, or a Workflow subclass (instantiated with no arguments). The
  task input becomes the run kwargs (the StartEvent's fields); a saved Context is restored; every
  streamed event (the StopEvent last) is emitted; events sent in reach ``ctx.send_event``; the
  result is the StopEvent's result and the Context is handed back, also after a failure.
* an async function and a sync function (run in a thread): the task input is its kwargs; the
  result is the return value; nothing is streamed.
* an async generator function and a sync generator function (run in a thread): every yielded item
  is emitted as an event, and the **last yielded item is also the result** (None if nothing was
  yielded), so ``yield`` progress then ``yield`` the answer.

Results are made JSON-encodable (:func:`llamactl.server.services.encoding.to_jsonable`).
"""

from __future__ import annotations

import abc
import contextlib
import inspect
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, ClassVar, Protocol

from llamactl.server.errors import WorkflowLoadError

from .encoding import envelope, to_jsonable
from .input_types import HINTED_ERRORS, misfits
from .threads import run_in_daemon_thread
from .where import Where, awaiting_frames, thread_frames

__all__ = ["Emit", "FunctionRunnable", "Run", "Runnable", "TaskInputError", "adapt"]


class Emit(Protocol):
    """Receives each streamed event as an envelope ``{"value", "type", "qualified_name"}``.

    ``last`` marks the run's final event (a workflow's StopEvent): nothing is streamed after it,
    so the worker may send it together with the task's result.
    """

    def __call__(self, envelope: dict[str, Any], *, last: bool = False) -> Awaitable[None]: ...


ACCEPTED = (
    "a workflows.Workflow instance, a Workflow subclass, an async or sync function, "
    "or an async or sync generator function"
)


class TaskInputError(TypeError):
    """The task input does not fit the target (missing or unknown arguments)."""


class Run(abc.ABC):
    """One execution in progress."""

    graceful_cancel: ClassVar[bool] = False
    """True when :meth:`cancel` makes ``wait()`` return by itself; else the caller cancels it at once."""

    @abc.abstractmethod
    async def wait(self) -> Any:
        """Drive the run to its end, emitting events; return the JSON-encodable result or raise."""

    async def send_event(self, event_obj_str: str) -> None:
        """Deliver an event sent in by a human (``JsonSerializer().serialize(event)``)."""
        raise TaskInputError("this service is not a workflow: it does not take events")

    async def cancel(self) -> None:  # noqa: B027  (a no-op is the right default)
        """Ask the run to stop gracefully; the caller cancels ``wait()`` if it does not."""

    def context(self, *, resumable: bool = False) -> dict[str, Any] | None:
        """The session Context after the run, for the session's next task; with ``resumable``,
        the run's as it is now, to go on from there (a run suspended at its question). None when
        there is none. Raises ContextNotSaved when it does not serialize."""
        return None

    def where(self) -> list[Where]:
        """Where the run's code is now (while it runs: for a timeout's error); empty when unknown."""
        return []


class Runnable(abc.ABC):
    """A loaded service target, ready to run tasks (several at once)."""

    kind: ClassVar[str]

    @abc.abstractmethod
    def start(
        self, kwargs: dict[str, Any], context: dict[str, Any] | None, emit: Emit, run_id: str | None = None
    ) -> Run:
        """Prepare one run; raises TaskInputError (or anything else) if it cannot start. ``run_id``
        names the run where the target has run ids (a workflow on a ``workflows`` that takes them)."""

    def cannot_resume(self, context: dict[str, Any]) -> str | None:
        """Why a run suspended at its question (``context``: its Context then) cannot go on from
        there in this code; None when it can."""
        return "this service is not a workflow"


# --- functions and generators ---------------------------------------------------------------------


def _signature(fn: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):
        return None  # builtins without a signature: let the call itself complain


_FIT_LIMIT = 64
"""Sets of input names remembered per function, at most: a bound however varied the inputs."""


class _Binder:
    """Checks that a task's input fits the function's signature before it runs (a TaskInputError
    naming both when it does not). Which names an input has is all that decides it (binding
    keywords never looks at their values), so the sets of names that fit are remembered: most
    tasks of a service send the same ones, and ``Signature.bind`` costs a few microseconds each."""

    def __init__(self, fn: Callable[..., Any], signature: inspect.Signature | None) -> None:
        self._fn = fn
        self._signature = signature
        self._fit: set[frozenset[str]] = set()

    def check(self, kwargs: dict[str, Any]) -> None:
        signature = self._signature
        if signature is None:
            return
        names = frozenset(kwargs)
        if names in self._fit:
            return
        try:
            signature.bind(**kwargs)
        except TypeError as exc:
            name = getattr(self._fn, "__qualname__", getattr(self._fn, "__name__", "the function"))
            raise TaskInputError(
                f"{exc}; {name} takes {signature}, got input keys {sorted(kwargs)}"
            ) from None
        if len(self._fit) < _FIT_LIMIT:
            self._fit.add(names)


class _FunctionRun(Run):
    def __init__(self, runnable: FunctionRunnable, kwargs: dict[str, Any], emit: Emit) -> None:
        self._r = runnable
        self._kwargs = kwargs
        self._emit = emit
        self._awaiting: object = None
        """The coroutine or async generator the run awaits, for :meth:`where`."""
        self._thread: int | None = None
        """The thread running the function's code now, for :meth:`where`."""

    async def wait(self) -> Any:
        fn, kind, kwargs = self._r.fn, self._r.kind, self._kwargs
        try:  # in place, not around a coroutine of its own: one frame less per task
            if kind == "async_function":
                self._awaiting = fn(**kwargs)
                return to_jsonable(await self._awaiting)  # type: ignore[misc]
            if kind == "function":
                result = await run_in_daemon_thread(self._in_thread, fn, **kwargs)
                if inspect.isawaitable(result):
                    self._awaiting = result
                    result = await result
                return to_jsonable(result)
            if kind == "async_generator":
                self._awaiting = fn(**kwargs)
                return await self._drain_async(self._awaiting)  # type: ignore[arg-type]
            return await self._drain_sync(fn(**kwargs))
        except HINTED_ERRORS as exc:
            misfit = misfits(fn, kwargs)
            if misfit is not None:
                exc.add_note(f"(the task's input: {misfit})")
            raise

    def _in_thread(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        self._thread = threading.get_ident()
        try:
            return fn(*args, **kwargs)
        finally:
            self._thread = None

    def where(self) -> list[Where]:
        thread = self._thread
        if thread is not None:
            frames = thread_frames(thread, after=_FunctionRun._in_thread.__code__)
        else:
            frames = awaiting_frames(self._awaiting) if self._awaiting is not None else []
        return [Where(frames)] if frames else []

    async def _drain_async(self, agen: AsyncIterator[Any]) -> Any:
        last: Any = None
        try:
            async for item in agen:
                await self._emit(envelope(item))
                last = item
        finally:
            aclose = getattr(agen, "aclose", None)
            if aclose is not None:
                await aclose()
        return to_jsonable(last)

    async def _drain_sync(self, gen: Iterator[Any]) -> Any:
        done = object()
        last: Any = None
        try:
            while True:
                item = await run_in_daemon_thread(self._in_thread, next, gen, done)
                if item is done:
                    return to_jsonable(last)
                await self._emit(envelope(item))
                last = item
        finally:
            close = getattr(gen, "close", None)
            if close is not None:
                # ValueError: still running in its abandoned thread (cancelled mid-item)
                with contextlib.suppress(ValueError):
                    close()


class FunctionRunnable(Runnable):
    """A plain or async function, or a generator function of either kind."""

    kind: str  # type: ignore[misc]  # per instance: one of the four below

    def __init__(self, fn: Callable[..., Any], kind: str) -> None:
        self.fn = fn
        self.kind = kind
        self._binder = _Binder(fn, _signature(fn))  # once: inspect.signature per task cost ~10 us

    def start(
        self, kwargs: dict[str, Any], context: dict[str, Any] | None, emit: Emit, run_id: str | None = None
    ) -> Run:
        self._binder.check(kwargs)
        return _FunctionRun(self, kwargs, emit)


def _function_kind(target: Callable[..., Any]) -> str:
    call = target if inspect.isroutine(target) else type(target).__call__
    if inspect.isasyncgenfunction(target) or inspect.isasyncgenfunction(call):
        return "async_generator"
    if inspect.isgeneratorfunction(target) or inspect.isgeneratorfunction(call):
        return "generator"
    if inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(call):
        return "async_function"
    return "function"


def adapt(target: object, *, label: str = "the service target") -> Runnable:
    """Wrap a loaded target; raise WorkflowLoadError naming ``label`` if it is not runnable.

    ``workflows`` is imported only when the target's module has imported it (a Workflow's class
    comes from it, so without it nothing is one): a function service's worker never loads it, a
    quarter of a second of CPU at every start and hot reload."""
    if "workflows" in sys.modules:
        from .workflow_runs import workflow_runnable  # noqa: PLC0415  (only where a target needs it)

        runnable = workflow_runnable(target, label)
        if runnable is not None:
            return runnable
    if isinstance(target, type):
        raise WorkflowLoadError(f"{label} is the class {target.__qualname__}; expected {ACCEPTED}")
    if callable(target):
        return FunctionRunnable(target, _function_kind(target))
    raise WorkflowLoadError(f"{label} is a {type(target).__name__} ({target!r:.60}); expected {ACCEPTED}")
