"""Stores and hands out a task in a session of its own (:attr:`StoredTask.own_session`).

Such a task (a ``tasks/run`` that names no session) has no session record to write now or to
free when it ends, and no turn to wait for: its session id is new and is answered to nobody
before :meth:`SoloRuns.submit` returns. So it is stored and published at once, with none of the
session machinery of :class:`~llamactl.server.control_plane.dispatcher.Dispatcher`.

When the queue holds its start message only in this process's memory and no record can hold its
id, it is even handed out before it is stored, and stored while its worker starts on it: see
:meth:`SoloRuns.submit`.
"""

from __future__ import annotations

from llamactl.server.control_plane.publisher import TaskPublisher
from llamactl.server.control_plane.records import ControlPlaneRecords
from llamactl.server.control_plane.stored import StoredTask
from llamactl.server.errors import LlamactlError, TaskExists
from llamactl.server.state.base import Cas, Write

__all__ = ["SoloRuns"]


class SoloRuns:
    def __init__(self, records: ControlPlaneRecords, publisher: TaskPublisher) -> None:
        self._records = records
        self._publisher = publisher

    async def submit(self, task: StoredTask, *, early: bool) -> None:
        """Store the task, marked as handed out, and hand it out. Raises TaskExists for a known id.

        ``early``: no record can hold its id and the queue keeps its start message only in this
        process's memory. Then the task is handed out first and stored while its worker runs it
        or, when other runs are waited on, with the run's first report if that comes within
        ``unstored_runs.STORE_WITHIN`` (one commit less per task); this returns, and the caller
        hears of the task, only once it is stored. Any other reader of the task meanwhile has it
        stored alone and waits for that commit (:meth:`ControlPlaneRecords.storing`); a commit
        that fails takes the task back (:meth:`TaskPublisher.withdraw`); a crash in between
        loses the message with the record, and nobody had been told of either.
        """
        task.dispatched = True
        # Built first: a task whose message cannot be built is failed, which must not wait for
        # its own first commit; such a task is stored first.
        payload = self._publisher.own_message(task) if early else None
        if payload is None:
            stored, writes = self._writes(task)
            result = await self._records.store.commit(writes)
            if not result.ok:
                raise TaskExists(task.task_id)
            self._records.remember_task(task, result.results[0], stored)
            await self._publisher.publish(task)
            return
        with self._records.storing(task.task_id):
            await self._publisher.publish(task, payload)
            unstored = self._records.unstored
            if unstored.worth_holding():
                await unstored.hold(task, self._store_alone)
            else:
                await self._store_alone(task)

    async def _store_alone(self, task: StoredTask) -> None:
        """Store a task handed out already; one whose record cannot be stored is taken back."""
        try:
            # Built once the message is on its way (its worker starts meanwhile), not before:
            # the loop turn that hands the task out is that much shorter.
            stored, writes = self._writes(task)
            result = await self._records.store.commit(writes)
            if not result.ok:
                raise TaskExists(task.task_id)
        except LlamactlError:
            await self._publisher.withdraw(task)
            raise
        self._records.remember_task(task, result.results[0], stored)

    def _writes(self, task: StoredTask) -> tuple[Cas, list[Write]]:
        """The task's record (created) and the writes that store it with its change-feed entry."""
        stored = self._records.task_write(task, None)
        return stored, [stored, self._records.status_change(task)]
