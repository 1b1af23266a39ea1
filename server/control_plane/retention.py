"""What a long-running control plane forgets, so that it stays bounded for weeks.

Finished tasks older than ``finished_age`` seconds, and the oldest ones beyond ``max_finished``,
are deleted with their event logs, and with the session made for them alone (and its Context);
the change feed keeps its last ``changes_kept`` entries. A pass deletes at most ``batch`` tasks, so
it never holds the loop long; a pass that hit the batch size is followed by another after a pause
as long as the pass took (:meth:`Retention.pause_after`), so that catching up leaves the loop to
the requests about half of the time.

A pass costs a few store round trips whatever its size (its reads go out together, its deletes in
one commit): on a busy server each round trip waits for the store's next batch, and pruning one
task at a time fell behind the tasks coming in.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from llamactl.server.control_plane.changes import ChangeFeed
from llamactl.server.control_plane.records import ControlPlaneRecords
from llamactl.server.control_plane.stored import StoredTask
from llamactl.server.types import TaskStatus

__all__ = ["Retention", "RetentionPolicy"]

log = logging.getLogger(__name__)

_FINAL = (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED)
_CHANGES_PER_TASK = 4
"""Change-feed entries a pass trims at most, per task it may delete (a task writes about two)."""
_DELETE_TRIES = 3
"""Tries of a pass's delete whose sessions changed in between (a task joined one)."""


@dataclass(frozen=True)
class RetentionPolicy:
    """How much finished work a deployment keeps (see the deployment file's ``control-plane``)."""

    finished_age: float = 7 * 24 * 3600.0
    """Seconds a finished task (with its event log) is kept after it was created."""
    max_finished: int = 10_000
    """Finished tasks kept at most; the oldest go first."""
    changes_kept: int = 10_000
    """Change-feed entries kept."""
    every: float = 10.0
    """Seconds between passes (the tasks finished in between are what the store holds beyond
    ``max_finished`` at its fullest)."""
    batch: int = 200
    """Tasks deleted at most per pass (their deletes are one commit, which holds the loop: a few
    milliseconds at 200)."""


class Retention:
    def __init__(self, records: ControlPlaneRecords, changes: ChangeFeed, policy: RetentionPolicy) -> None:
        self._records = records
        self._changes = changes
        self.policy = policy
        self.pruned_tasks = 0
        self.pruned_changes = 0
        self._behind = False
        """The last pass left tasks or change-feed entries due (it hit its bound)."""

    async def prune(self, now: float | None = None) -> int:
        """One pass; returns how many tasks it deleted (``batch`` means: more are due)."""
        now = time.time() if now is None else now
        counts = await self._records.count_tasks()
        finished = sum(by_status.get(s.value, 0) for by_status in counts.values() for s in _FINAL)
        excess = finished - self.policy.max_finished
        cutoff = f"{now - self.policy.finished_age:017.6f}"
        # A pass with nothing to do reads one task per status, not a batch of them.
        oldest = await self._oldest_finished(self.policy.batch if excess > 0 else 1)
        if excess <= 0 and oldest and oldest[0].sort < cutoff:
            oldest = await self._oldest_finished(self.policy.batch)
        doomed = [t for i, t in enumerate(oldest) if i < excess or t.sort < cutoff]
        if doomed and not await self._delete(doomed):
            doomed = []  # their sessions kept changing: the next pass tries again
        self.pruned_tasks += len(doomed)
        trim = _CHANGES_PER_TASK * self.policy.batch
        trimmed = await self._changes.trim(self.policy.changes_kept, at_most=trim)
        self.pruned_changes += trimmed
        self._behind = len(doomed) >= self.policy.batch or trimmed >= trim
        if doomed:
            log.info("%s: pruned %d finished task(s)", self._records.deployment, len(doomed))
        return len(doomed)

    async def run(self) -> None:
        """Prune for ever, each pass followed by :meth:`pause_after` (until cancelled)."""
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            pruned = await self.prune()
            await asyncio.sleep(self.pause_after(pruned, loop.time() - started))

    def pause_after(self, pruned: int, took: float) -> float:
        """Seconds to wait after a pass that deleted ``pruned`` tasks in ``took`` seconds.

        Caught up: :attr:`RetentionPolicy.every`. Behind (the pass hit its bound of tasks or of
        change-feed entries): as long as the pass took (at most ``every``). Passes back to back
        held the loop for a second and more every interval once a busy server had more than
        ``max_finished`` tasks (20,000 to delete at 2,200 tasks/s): its throughput halved for
        that second and p99 went from 20 to 80-160 ms. Paced, pruning takes at most about half
        of the loop; deleting a task costs far less than running one, so it still keeps up.
        """
        if pruned >= self.policy.batch or self._behind:
            return min(took, self.policy.every)
        return self.policy.every

    async def _oldest_finished(self, limit: int) -> list[StoredTask]:
        pages = await asyncio.gather(*(self._records.list_tasks(status=s, limit=limit) for s in _FINAL))
        return sorted((t for page in pages for t in page.items), key=lambda t: t.sort)[:limit]

    async def _delete(self, doomed: Sequence[StoredTask]) -> bool:
        """Delete the tasks with the sessions they leave empty; False if those kept changing."""
        for _ in range(_DELETE_TRIES):
            # A session is deleted only as it was read: a task stored in it since makes it
            # the user's, and the sessions are read again.
            if await self._records.delete_tasks(doomed, await self._sessions_left_empty(doomed)):
                return True
        return False

    async def _sessions_left_empty(self, doomed: Sequence[StoredTask]) -> list[tuple[str, int]]:
        """The sessions made for these tasks alone (not by a user) that deleting them empties,
        with the versions read.

        One read for all of them: a read per session (and one of its tasks) cost ~70 us per
        pruned task on SQLite and ~370 us on PostgreSQL, a round trip each. A session made for a
        task (``implicit``) stops being one when another task joins it (``Dispatcher.submit``), so
        the record alone tells; one whose turn names a task that is not going stays too.
        """
        going: dict[str, set[str]] = {}
        for task in doomed:
            if not task.own_session:  # a session of its own has no record
                going.setdefault(task.session_id, set()).add(task.task_id)
        found = await self._records.find_sessions(going)
        return [
            (s.session_id, version)
            for s, version in found
            if s.implicit
            and (s.active is None or s.active in going[s.session_id])
            and going[s.session_id].issuperset(s.waiting)
        ]
