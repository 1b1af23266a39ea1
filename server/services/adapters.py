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
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, ClassVar, Protocol

from workflows import Context, Workflow
from workflows.context.serializers import JsonSerializer
from workflows.errors import WorkflowRuntimeError
from workflows.events import Event, StopEvent

from llamactl.server.errors import ContextNotSaved, WorkflowLoadError

from . import signatures
from .encoding import envelope, to_jsonable
from .errorinfo import error_line
from .input_types import HINTED_ERRORS, misfits
from .threads import run_in_daemon_thread
from .where import Where, awaiting_frames, steps_pending, thread_frames, workflow_steps_where

__all__ = ["Emit", "Run", "Runnable", "TaskInputError", "adapt"]


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

    def context(self) -> dict[str, Any] | None:
        """The session Context after (or during) the run; None when there is none. Raises
        ContextNotSaved when it does not serialize."""
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


# --- workflows ------------------------------------------------------------------------------------


_TAKES_RUN_ID = "run_id" in inspect.signature(getattr(Context, "_workflow_run", lambda: None)).parameters
"""Whether ``Workflow.run`` takes a ``run_id`` (``workflows`` 2.14 and later). Named by the worker,
a run's id says which task it is (in the library's instrumentation tags, on its handler), and the
library does not draw a random one per run (ten ``secrets.choice`` calls: 2 % of a worker's CPU
per workflow echo). On an older ``workflows`` it would become a field of the StartEvent."""


class _WorkflowRun(Run):
    graceful_cancel = True

    def __init__(
        self,
        workflow: Workflow,
        kwargs: dict[str, Any],
        context: dict[str, Any] | None,
        emit: Emit,
        run_id: str | None,
    ) -> None:
        ctx = Context.from_dict(workflow, context) if context else None
        self._workflow = workflow
        if run_id is not None and "run_id" not in kwargs and _TAKES_RUN_ID:
            kwargs = {**kwargs, "run_id": run_id}  # an input's own run_id goes on as before
        self._handler = workflow.run(ctx=ctx, **kwargs)
        self._emit = emit

    async def wait(self) -> Any:
        try:
            async for ev in self._handler.stream_events():
                try:
                    await self._emit(envelope(ev), last=isinstance(ev, StopEvent))
                except Exception:
                    # The event could not be sent (too large, the queue failed): the run ends here
                    # rather than going on unseen.
                    with contextlib.suppress(Exception):
                        await self._handler.cancel_run()
                    raise
            return to_jsonable(await self._handler)
        except WorkflowRuntimeError as exc:
            if (cause := _wrapped_step_error(exc)) is None:
                raise
            raise cause from None

    async def send_event(self, event_obj_str: str) -> None:
        try:
            event = JsonSerializer().deserialize(event_obj_str)
        except Exception as exc:
            raise TaskInputError(f"the event cannot be built: {error_line(exc)}") from exc
        if not isinstance(event, Event):
            raise TaskInputError(f"{type(event).__qualname__} is not a workflows Event")
        self._handler.ctx.send_event(event)

    async def cancel(self) -> None:
        await self._handler.cancel_run()

    def context(self) -> dict[str, Any] | None:
        try:
            return self._handler.ctx.to_dict()
        except Exception as exc:
            raise ContextNotSaved(exc) from exc

    def where(self) -> list[Where]:
        try:
            context = self._handler.ctx.to_dict()
        except Exception:  # said once, where the Context is saved at the run's end
            return []
        return workflow_steps_where(self._workflow, context)


def _wrapped_step_error(exc: WorkflowRuntimeError) -> BaseException | None:
    """The user's own exception when ``exc`` only wraps it: workflows 1.x raises a failing step's
    exception as ``WorkflowRuntimeError("Error in step 'name': ...")`` from it (2.x raises it as
    it is), so the task's error names the step's ``ValueError`` on either version."""
    cause = exc.__cause__
    return cause if cause is not None and str(exc).startswith("Error in step ") else None


class WorkflowRunnable(Runnable):
    kind = "workflow"

    def __init__(self, workflow: Workflow) -> None:
        self.workflow = workflow
        _remember_steps(workflow)
        signatures.install()  # once per process: later calls find the modules done

    def start(
        self, kwargs: dict[str, Any], context: dict[str, Any] | None, emit: Emit, run_id: str | None = None
    ) -> Run:
        return _WorkflowRun(self.workflow, kwargs, context, emit, run_id)

    def cannot_resume(self, context: dict[str, Any]) -> str | None:
        # A restored run whose waiting step the code no longer has would wait, silently, for
        # its whole timeout (the library does not check).
        steps: dict[str, Any] = getattr(self.workflow, "_get_steps", dict)()
        missing = [name for name in steps_pending(context) if name not in steps]
        if missing:
            return f"the workflow has no step {', '.join(missing)} any more (the run waited in it)"
        return None


def _remember_steps(workflow: Workflow) -> None:
    """Look the workflow's steps up once, not on every run.

    ``workflows`` finds an instance's steps with ``inspect.getmembers`` each time it asks, several
    times per run: a sixth of a worker's CPU per echo task on 2.x, a quarter of a run's in place on
    1.x (three lookups). A step is a method of the class or a function added with ``add_step``,
    so the lookup is done again when the class's added steps change: 2.x bumps the class's
    ``_step_functions_version``; 1.x only adds to the class's ``_step_functions`` (a step's name
    is refused once taken), so there the names added so far tell it. A ``workflows`` with neither
    is left as is.
    """
    lookup = getattr(workflow, "_get_steps", None)
    cls = type(workflow)
    if lookup is None or not callable(lookup):
        return
    if hasattr(cls, "_step_functions_version"):

        def added() -> object:
            return getattr(cls, "_step_functions_version", None)

    elif isinstance(getattr(cls, "_step_functions", None), dict):

        def added() -> object:
            return tuple(getattr(cls, "_step_functions", ()))

    else:
        return
    remembered: tuple[object, dict[str, Any]] | None = None  # (what was added, the steps)

    def steps() -> dict[str, Any]:
        nonlocal remembered
        now = added()
        if remembered is None or remembered[0] != now:
            remembered = (now, lookup())
        return dict(remembered[1])  # a copy, as the library's own lookup hands out

    workflow._get_steps = steps  # type: ignore[method-assign]


# --- functions and generators ---------------------------------------------------------------------


def _signature(fn: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):
        return None  # builtins without a signature: let the call itself complain


def _bind(fn: Callable[..., Any], signature: inspect.Signature | None, kwargs: dict[str, Any]) -> None:
    if signature is None:
        return
    try:
        signature.bind(**kwargs)
    except TypeError as exc:
        name = getattr(fn, "__qualname__", getattr(fn, "__name__", "the function"))
        raise TaskInputError(f"{exc}; {name} takes {signature}, got input keys {sorted(kwargs)}") from None


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
        self._signature = _signature(fn)  # once: inspect.signature per task cost ~10 us

    def start(
        self, kwargs: dict[str, Any], context: dict[str, Any] | None, emit: Emit, run_id: str | None = None
    ) -> Run:
        _bind(self.fn, self._signature, kwargs)
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
    """Wrap a loaded target; raise WorkflowLoadError naming ``label`` if it is not runnable."""
    if isinstance(target, Workflow):
        return WorkflowRunnable(target)
    if isinstance(target, type):
        if issubclass(target, Workflow):
            try:
                return WorkflowRunnable(target())
            except Exception as exc:
                raise WorkflowLoadError(
                    f"{label}: could not instantiate Workflow subclass {target.__qualname__} with no "
                    f"arguments: {error_line(exc)}"
                ) from exc
        raise WorkflowLoadError(f"{label} is the class {target.__qualname__}; expected {ACCEPTED}")
    if callable(target):
        return FunctionRunnable(target, _function_kind(target))
    raise WorkflowLoadError(f"{label} is a {type(target).__name__} ({target!r:.60}); expected {ACCEPTED}")
