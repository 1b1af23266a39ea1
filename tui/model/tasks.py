"""The tasks the dashboard knows: a bounded, insertion-ordered book fed by listings and the change feed."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from llamactl.server.types import TaskRecord, TaskStatus, shown_status

__all__ = ["STATUS_ORDER", "TaskBook", "TaskRow"]

STATUS_ORDER = {
    TaskStatus.RUNNING: 0,
    TaskStatus.QUEUED: 1,
    TaskStatus.FAILED: 2,
    TaskStatus.CANCELLED: 3,
    TaskStatus.COMPLETED: 4,
}
"""How the status column sorts: what needs attention first."""


@dataclass(slots=True)
class TaskRow:
    """One task as the tables show it (a TaskRecord without input, result and traceback)."""

    task_id: str
    session_id: str
    service_id: str
    status: TaskStatus
    attempts: int = 0
    replica_id: str | None = None
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    waiting_for_answer: bool = False
    """Its workflow waits for a person's answer (shown as ``asking``: see :func:`shown_status`)."""

    @classmethod
    def of(cls, record: TaskRecord) -> TaskRow:
        return cls(
            task_id=record.task_id,
            session_id=record.session_id,
            service_id=record.service_id,
            status=record.status,
            attempts=record.attempts,
            replica_id=record.replica_id,
            created_at=record.created_at,
            started_at=record.started_at,
            finished_at=record.finished_at,
            error=record.error,
            waiting_for_answer=record.waiting_for_answer,
        )

    @property
    def shown_status(self) -> str:
        """Its status as the tables show it: ``asking`` while it waits for a person's answer."""
        return shown_status(self.status, self.waiting_for_answer)

    def age(self, now: float) -> float:
        return now - self.created_at

    def duration(self, now: float) -> float | None:
        """Seconds it ran (so far, while it runs); None before it started."""
        if self.started_at is None:
            if self.finished_at is not None:
                return 0.0
            return None
        end = self.finished_at if self.finished_at is not None else now
        return end - self.started_at


class TaskBook:
    """At most ``cap`` tasks; when full, the oldest finished ones go first, and pinned ones never.

    Every method that changes the book returns the ids it changed (added, updated or dropped),
    so the views redraw only those rows.
    """

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._rows: dict[str, TaskRow] = {}
        self.pinned: set[str] = set()
        """Ids never dropped to make room (the task on show in the events view)."""
        self.dropped = 0
        """How many tasks were dropped to stay under the cap, ever."""

    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[TaskRow]:
        return iter(self._rows.values())

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._rows

    def get(self, task_id: str) -> TaskRow | None:
        return self._rows.get(task_id)

    def clear(self) -> None:
        self._rows.clear()

    def load(self, records: Iterable[TaskRecord]) -> set[str]:
        """Add or refresh tasks from a listing (records are the truth: they replace what we had)."""
        changed: set[str] = set()
        for record in sorted(records, key=lambda r: r.created_at):
            previous = self._rows.get(record.task_id)
            row = TaskRow.of(record)
            if previous is not None and previous.status.is_final and not row.status.is_final:
                continue  # a listing older than a change we already applied
            if previous != row:
                self._rows[record.task_id] = row
                changed.add(record.task_id)
        return changed | self._make_room()

    def apply_status(self, data: Mapping[str, Any], at: float) -> set[str]:
        """Apply a ``task.status`` change (``data`` of the change feed, ``at`` its time)."""
        task_id = str(data.get("task_id") or "")
        try:
            status = TaskStatus(str(data.get("status")))
        except ValueError:
            return set()
        if not task_id:
            return set()
        row = self._rows.get(task_id)
        if row is None:
            row = TaskRow(
                task_id=task_id,
                session_id=str(data.get("session_id") or ""),
                service_id=str(data.get("service_id") or ""),
                status=status,
                created_at=at,
            )
            self._rows[task_id] = row
        elif row.status.is_final and not (status.is_final and status is not row.status):
            return set()  # a final task does not go back; replays after a reconnect are no-ops
        # The same status again: the task asked or was answered, or a new attempt started.
        restarted = status is not row.status or int(data.get("attempts") or 0) > row.attempts
        row.status = status
        row.waiting_for_answer = bool(data.get("waiting_for_answer"))
        row.attempts = int(data.get("attempts") or row.attempts)
        row.replica_id = data.get("replica_id") or row.replica_id
        row.error = data.get("error") or (None if status is TaskStatus.COMPLETED else row.error)
        if status is TaskStatus.RUNNING:
            if restarted or row.started_at is None:
                row.started_at = at
            row.finished_at = None
        elif status is TaskStatus.QUEUED:
            row.started_at = None
        elif status.is_final and row.finished_at is None:
            row.finished_at = at
        return {task_id} | self._make_room()

    def _make_room(self) -> set[str]:
        """Drop tasks until the book is at most ``cap`` (down to 90 %, so this runs seldom)."""
        if len(self._rows) <= self.cap:
            return set()
        target = self.cap - self.cap // 10 if self.cap >= 10 else self.cap
        dropped: set[str] = set()
        for final_only in (True, False):
            for task_id, row in list(self._rows.items()):
                if len(self._rows) <= target:
                    break
                if task_id in self.pinned or (final_only and not row.status.is_final):
                    continue
                del self._rows[task_id]
                dropped.add(task_id)
        self.dropped += len(dropped)
        return dropped
