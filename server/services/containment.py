"""A task's code cannot stop its worker: ``SystemExit`` and ``KeyboardInterrupt`` fail the task.

asyncio lets these two out of the event loop from whichever task raised them (``Task.__step``
re-raises them), so a ``sys.exit()`` in a step or a function would end the worker process and
every task it runs; delivered again, the task would end the next worker, and the next. Tasks
made while a task's code runs (its run, the workflow library's step workers, the user's own
``create_task``) are made, through the loop's task factory, around a coroutine that turns either
exception into :class:`~llamactl.server.errors.ExitInTask`, an ordinary exception, and tells
whoever runs the task (:attr:`TaskCode.stopped`) to stop the run: raised in a task the workflow
library made for a step, it would otherwise be waited for until the workflow's timeout (the
library expects only ``Exception`` from a step). A sync function's
``SystemExit`` comes back from its thread into the task that awaits it, the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Callable, Coroutine, Generator, Iterator
from typing import Any, TypeVar

from llamactl.server.errors import ExitInTask

__all__ = ["TaskCode", "running_task_code"]

T = TypeVar("T")


class TaskCode:
    """One task's run, as the tasks its code makes see it: the first exit it tried, if any."""

    __slots__ = ("escaped", "stopped")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.escaped: ExitInTask | None = None
        """The ExitInTask of the first SystemExit or KeyboardInterrupt the run's code raised."""
        self.stopped: asyncio.Future[None] = loop.create_future()
        """Done once the run's code raised one: whoever runs it stops the run."""

    def exited(self, exc: SystemExit | KeyboardInterrupt) -> ExitInTask:
        """Note the exit ``exc`` (the first one wins); return the ExitInTask to raise instead."""
        error = ExitInTask(exc).with_traceback(exc.__traceback__)
        error.__cause__ = exc
        if self.escaped is None:
            self.escaped = error
            if not self.stopped.done():
                self.stopped.set_result(None)
        return error


_TASK_CODE: contextvars.ContextVar[TaskCode | None] = contextvars.ContextVar("llamactl_task", default=None)


async def _contained(coro: Coroutine[Any, Any, T], code: TaskCode) -> T:
    try:
        return await coro
    except (SystemExit, KeyboardInterrupt) as exc:
        raise code.exited(exc) from exc


class _Factory:
    """The loop's task factory once a task ran: contains the tasks made by a task's code."""

    def __init__(self, inner: Callable[..., asyncio.Future[Any]] | None) -> None:
        self.inner = inner

    def __call__(
        self,
        loop: asyncio.AbstractEventLoop,
        coro: Coroutine[Any, Any, Any] | Generator[Any, None, Any],
        /,
        **kwargs: Any,
    ) -> asyncio.Future[Any]:
        context: contextvars.Context | None = kwargs.get("context")
        code = context.get(_TASK_CODE) if context is not None else _TASK_CODE.get()
        if code is not None and asyncio.iscoroutine(coro):
            coro = _contained(coro, code)
        if self.inner is not None:
            return self.inner(loop, coro, **kwargs)
        return asyncio.Task(coro, loop=loop, **kwargs)


@contextlib.contextmanager
def running_task_code() -> Iterator[TaskCode]:
    """Within this block, and in every task made within it (tasks copy the context they are made
    in), tasks are made contained. Installs the running loop's task factory the first time."""
    loop = asyncio.get_running_loop()
    factory = loop.get_task_factory()
    if not isinstance(factory, _Factory):
        loop.set_task_factory(_Factory(factory))
    code = TaskCode(loop)
    token = _TASK_CODE.set(code)
    try:
        yield code
    finally:
        _TASK_CODE.reset(token)
