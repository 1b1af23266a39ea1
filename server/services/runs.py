"""The runs one worker has going: each task's attempt and the asyncio task handling it, and
which of them wait for a person's answer.

Two jobs the worker leaves here:

* a task that comes back to the worker still running its earlier attempt (the broker took the
  worker for dead while it ran: stopped, say, past the heartbeat wait) stops that older run:
  its lease is gone, the control plane logs none of its events any more, and two runs of one
  task side by side only cost twice;
* a run that waits for a person's answer (its last event asked a question) would hold a stop
  for its whole grace and be killed at its end: once the worker stops, its suspend event is set
  instead (see ``suspend`` of :func:`~.execution.execute`): the run is stopped at once, and
  the task goes on from that question on the next worker.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from .execution import Suspend

__all__ = ["Runs"]

log = logging.getLogger(__name__)


class Runs:
    """``begin`` and ``forget`` each run from the asyncio task that handles it."""

    def __init__(self) -> None:
        self._by_task: dict[str, tuple[int, asyncio.Task[Any]]] = {}
        """Running tasks by id: the attempt and the asyncio task that runs it."""
        self._asking: set[asyncio.Task[Any]] = set()
        self._suspends: dict[asyncio.Task[Any], Suspend] = {}
        """Each handler's suspend event (see :meth:`begin`)."""
        self._stopping = False

    def begin(self, task_id: str, attempt: int) -> Suspend:
        """The current asyncio task runs ``attempt`` of ``task_id``: an older attempt's run still
        going here is stopped. Returns what is set when the run is to be suspended."""
        current = asyncio.current_task()
        older = self._by_task.get(task_id)
        if older is not None and older[0] < attempt and older[1] is not current:
            log.warning(
                "task %s came back to this worker (attempt %d) while its attempt %d still ran here: "
                "this worker was taken for dead (stopped, or cut off from the broker); stopping "
                "the older run",
                task_id,
                attempt,
                older[0],
            )
            older[1].cancel()
        suspend = Suspend()
        if current is not None:
            self._by_task[task_id] = (attempt, current)
            self._suspends[current] = suspend
        return suspend

    def forget(self, task_id: str) -> None:
        """The current asyncio task's run of ``task_id`` is over (a newer attempt's is left be)."""
        current = asyncio.current_task()
        self._asking.discard(current)
        self._suspends.pop(current, None)  # type: ignore[arg-type]
        if self._by_task.get(task_id, (0, None))[1] is current:
            del self._by_task[task_id]

    def asking(self, handler: asyncio.Task[Any], asking: bool) -> None:
        """``handler``'s run starts (or stops) waiting for a person's answer."""
        if not asking:
            self._asking.discard(handler)
            return
        self._asking.add(handler)
        if self._stopping:
            log.info("stopping: a task asked for a person's answer: it goes on from there on the next worker")
            self._suspend(handler)

    def stop(self) -> None:
        """The worker stops: the runs that wait for a person's answer are suspended now."""
        if not self._stopping and self._asking:
            log.info(
                "stopping: %d task(s) wait for a person's answer: they go on from their question "
                "on the next worker",
                len(self._asking),
            )
        self._stopping = True
        for handler in self._asking:
            self._suspend(handler)

    def _suspend(self, handler: asyncio.Task[Any]) -> None:
        suspend = self._suspends.get(handler)
        if suspend is not None:
            suspend.set()
        else:  # not begun through begin(): nothing listens for a suspend
            handler.cancel()
