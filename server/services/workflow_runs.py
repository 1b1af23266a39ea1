"""Workflows as services: a ``workflows.Workflow`` instance or subclass behind the
:class:`~llamactl.server.services.adapters.Runnable` interface.

Imported only where a target is a Workflow (:func:`~llamactl.server.services.adapters.adapt`), so
a worker of plain functions never loads ``workflows``.
"""

from __future__ import annotations

import contextlib
import inspect
from typing import Any

from workflows import Context, Workflow
from workflows.context.serializers import JsonSerializer
from workflows.errors import WorkflowRuntimeError
from workflows.events import Event, StopEvent

from llamactl.server.errors import ContextNotSaved, WorkflowLoadError

from . import protocol_members, signatures
from .adapters import Emit, Run, Runnable, TaskInputError
from .encoding import envelope, to_jsonable
from .errorinfo import error_line
from .where import Where, steps_pending, workflow_steps_where

__all__ = ["WorkflowRunnable", "prepare_workflow", "workflow_runnable"]


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

    def context(self, *, resumable: bool = False) -> dict[str, Any] | None:
        try:
            saved = self._handler.ctx.to_dict()
            if not resumable and _unfinished(saved):
                # A run stopped before its end (cancelled, timed out): restored as it is, it would
                # go on in the session's next task (its steps again, with its own input) beside
                # or instead of that task's run. The next task starts from its state only.
                fresh = Context(self._workflow).to_dict()
                fresh["state"] = saved["state"]
                saved = fresh
            return saved
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
        prepare_workflow(workflow)

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


def prepare_workflow(workflow: Workflow) -> None:
    """What a worker does to a workflow before its first run, so that each run skips work the
    ``workflows`` library would repeat: the workflow's steps looked up once (not on every run),
    the signatures its instrumentation inspects remembered per function (``signatures``) and, on
    Python 3.11, the members of the Protocol its state store is checked against remembered per
    class (``protocol_members``)."""
    _remember_steps(workflow)
    signatures.install()  # once per process: later calls find the modules done
    protocol_members.install()


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


def workflow_runnable(target: object, label: str) -> Runnable | None:
    """``target`` as a Runnable when it is a Workflow instance or subclass (instantiated with no
    arguments; WorkflowLoadError naming ``label`` when that fails), else None."""
    if isinstance(target, Workflow):
        return WorkflowRunnable(target)
    if isinstance(target, type) and issubclass(target, Workflow):
        try:
            return WorkflowRunnable(target())
        except Exception as exc:
            raise WorkflowLoadError(
                f"{label}: could not instantiate Workflow subclass {target.__qualname__} with no "
                f"arguments: {error_line(exc)}"
            ) from exc
    return None


def _unfinished(saved: dict[str, Any]) -> bool:
    """Whether a run's saved Context is of a run that had not ended: workflows 2.x says so
    (``is_running``); 1.x leaves a stopped run's steps listed as in progress."""
    if saved.get("is_running"):
        return True
    in_progress = saved.get("in_progress")
    return isinstance(in_progress, dict) and any(in_progress.values())
