"""Runs handed out and not stored yet: each is stored with its first report when that comes soon.

A ``tasks/run`` whose id the server made goes to its worker before its record is stored
(:class:`~llamactl.server.control_plane.solo_runs.SoloRuns`): nobody knows its id but the worker
until it has ended, and the embedded broker holds its message in memory only. When other runs
are waited on (:meth:`UnstoredRuns.worth_holding`), its record then waits up to
:data:`STORE_WITHIN` seconds for the run's first report (its result, for a run that short) and
is written in the same commit, the task created as the report leaves it: one record write and
one change-feed entry less per task (``bench/README.md``, point 32). Anything else that reads
the task meanwhile, the time running out, or the server stopping stores it alone at once, as
before. A crash within that time loses the run, as one just before its record's commit did: it
was never stored, and its caller's request failed with the server.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

from llamactl.server.control_plane.stored import StoredTask

__all__ = ["STORE_WITHIN", "UnstoredRuns"]

STORE_WITHIN = 0.05
"""Seconds a run's record waits for its first report before it is stored alone."""

StoreAlone = Callable[[StoredTask], Awaitable[None]]


@dataclass(slots=True)
class _Unstored:
    task: StoredTask
    stored: asyncio.Future[None]
    store_alone: StoreAlone
    timer: asyncio.TimerHandle
    taken: bool = False
    """Being stored with a report: nothing else stores it meanwhile."""


class UnstoredRuns:
    """The runs whose record waits for their first report (bounded by the runs in flight)."""

    def __init__(self, within: float = STORE_WITHIN, min_waited_on: int = 2) -> None:
        self.within = within
        self.min_waited_on = min_waited_on
        """Runs whose callers wait (the new one included) from which a new run's record waits
        for its first report."""
        self.waited_on = 0
        """Runs whose callers wait for them now (:meth:`waiting`)."""
        self._runs: dict[str, _Unstored] = {}
        self._storing: set[asyncio.Task[None]] = set()
        self.stored_with_report = 0
        """Runs whose record went in one commit with their first report (for tests)."""

    def __len__(self) -> int:
        return len(self._runs)

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """A caller waits for its run while the block runs (``tasks/run``)."""
        self.waited_on += 1
        try:
            yield
        finally:
            self.waited_on -= 1

    def worth_holding(self) -> bool:
        """Whether a run handed out now should wait for its first report: when other runs are
        waited on, the server is busy and a commit less pays; alone, its record is stored while
        its worker runs it, off the round trip's path, so holding it would buy nothing and only
        widen the time a crash loses it in (point 32)."""
        return self.waited_on >= self.min_waited_on

    def hold(self, task: StoredTask, store_alone: StoreAlone) -> asyncio.Future[None]:
        """Hold ``task``'s record; the future is done once it is stored, with its first report
        (:meth:`take`, then :meth:`stored`) or alone by ``store_alone(task)``, whose error it
        carries."""
        loop = asyncio.get_running_loop()
        stored: asyncio.Future[None] = loop.create_future()
        stored.add_done_callback(_retrieved)
        timer = loop.call_later(self.within, self.release, task.task_id)
        self._runs[task.task_id] = _Unstored(task, stored, store_alone, timer)
        return stored

    def peek(self, task_id: str) -> StoredTask | None:
        """The held task itself (not a copy: for readers only), or None."""
        run = self._runs.get(task_id)
        return None if run is None else run.task

    def take(self, task_id: str) -> StoredTask | None:
        """Take the held task to store it with a report; then call :meth:`stored` once it is, or
        :meth:`give_back` if it could not be. None when it is not held (or taken already)."""
        run = self._runs.get(task_id)
        if run is None or run.taken:
            return None
        run.timer.cancel()
        run.taken = True
        return run.task

    def stored(self, task_id: str) -> None:
        """The task taken has been stored with its report."""
        run = self._runs.pop(task_id, None)
        if run is not None:
            self.stored_with_report += 1
            if not run.stored.done():
                run.stored.set_result(None)

    def give_back(self, task_id: str) -> None:
        """The task taken could not be stored with its report: store it alone now."""
        run = self._runs.get(task_id)
        if run is not None:
            run.taken = False
            self.release(task_id)

    def release(self, task_id: str) -> None:
        """Store the task alone now, if it is held and not taken (its holder hears when it is)."""
        run = self._runs.get(task_id)
        if run is None or run.taken:
            return
        del self._runs[task_id]
        run.timer.cancel()
        storing = asyncio.get_running_loop().create_task(_store(run), name=f"store:{task_id}")
        self._storing.add(storing)
        storing.add_done_callback(self._storing.discard)

    async def flush(self) -> None:
        """Store every held task now (alone, unless a report's commit has it) and wait until each
        is: the server stops."""
        held = [run.stored for run in self._runs.values()]
        for task_id in list(self._runs):
            self.release(task_id)
        await asyncio.gather(*held, *self._storing, return_exceptions=True)


async def _store(run: _Unstored) -> None:
    try:
        await run.store_alone(run.task)
    except Exception as exc:  # the holder hears of it; nothing else waits on this task
        if not run.stored.done():
            run.stored.set_exception(exc)
        return
    if not run.stored.done():
        run.stored.set_result(None)


def _retrieved(future: asyncio.Future[None]) -> None:
    """Mark an error as seen: a holder cancelled meanwhile no longer asks for it."""
    if not future.cancelled():
        with contextlib.suppress(Exception):
            future.exception()
