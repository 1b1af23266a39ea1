"""The runs one worker has going: each task's attempt and the asyncio task handling it, and
which of them wait for a person's answer.

Two jobs the worker leaves here:

* a task that comes back to the worker still running its earlier attempt (the broker took the
  worker for dead while it ran: stopped, say, past the heartbeat wait) stops that older run:
  its lease is gone, the control plane logs none of its events any more, and two runs of one
  task side by side only cost twice;
* a run that waits for a person's answer (its last event asked a question) would hold a stop
  for its whole grace and be killed at its end: once the worker stops, it is stopped at once
  instead, its delivery given back uncharged, and the task runs (and asks) again on the next
  worker.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

__all__ = ["Runs"]

log = logging.getLogger(__name__)


class Runs:
    """``begin`` and ``forget`` each run from the asyncio task that handles it."""

    def __init__(self) -> None:
        self._by_task: dict[str, tuple[int, asyncio.Task[Any]]] = {}
        """Running tasks by id: the attempt and the asyncio task that runs it."""
        self._asking: set[asyncio.Task[Any]] = set()
        self._stopping = False

    def begin(self, task_id: str, attempt: int) -> None:
        """The current asyncio task runs ``attempt`` of ``task_id``: an older attempt's run still
        going here is stopped."""
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
        if current is not None:
            self._by_task[task_id] = (attempt, current)

    def forget(self, task_id: str) -> None:
        """The current asyncio task's run of ``task_id`` is over (a newer attempt's is left be)."""
        current = asyncio.current_task()
        self._asking.discard(current)
        if self._by_task.get(task_id, (0, None))[1] is current:
            del self._by_task[task_id]

    def asking(self, handler: asyncio.Task[Any], asking: bool) -> None:
        """``handler``'s run starts (or stops) waiting for a person's answer."""
        if not asking:
            self._asking.discard(handler)
        elif self._stopping:
            log.info("stopping: a task asked for a person's answer: it is put back")
            handler.cancel()
        else:
            self._asking.add(handler)

    def stop(self) -> None:
        """The worker stops: the runs that wait for a person's answer are stopped now."""
        if not self._stopping and self._asking:
            log.info(
                "stopping: %d task(s) wait for a person's answer: they are put back, and ask again "
                "on the next worker",
                len(self._asking),
            )
        self._stopping = True
        for handler in self._asking:
            handler.cancel()
