"""The sessions the dashboard knows: a bounded book with each one's task count and Context size."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from llamactl.server.types import SessionDefinition

__all__ = ["SessionBook", "SessionRow"]


@dataclass(slots=True)
class SessionRow:
    """One session: its tasks (as far as seen), when it was first seen, its Context's size."""

    session_id: str
    first_seen: float
    task_ids: set[str] = field(default_factory=set)
    context_bytes: int | None = None
    """Size of its saved workflow Context; None until known (or when none is saved)."""
    context_known: bool = False


class SessionBook:
    """At most ``cap`` sessions, newest last; the oldest go first when full (never pinned ones)."""

    def __init__(self, cap: int, tasks_per_session: int = 1_000) -> None:
        self.cap = cap
        self.tasks_per_session = tasks_per_session
        self._rows: dict[str, SessionRow] = {}
        self.pinned: set[str] = set()
        """Ids never dropped to make room (the selected session)."""

    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[SessionRow]:
        return iter(self._rows.values())

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._rows

    def get(self, session_id: str) -> SessionRow | None:
        return self._rows.get(session_id)

    def newest(self, count: int) -> list[SessionRow]:
        """The ``count`` newest sessions, newest first."""
        rows = list(self._rows.values())[-count:]
        return rows[::-1]

    def clear(self) -> None:
        self._rows.clear()

    def load(self, sessions: Iterable[SessionDefinition], now: float) -> set[str]:
        """Add or refresh sessions from a listing."""
        changed: set[str] = set()
        for session in sessions:
            row = self._rows.get(session.session_id)
            if row is None:
                row = self._rows[session.session_id] = SessionRow(session.session_id, now)
                changed.add(session.session_id)
            ids = session.task_ids[-self.tasks_per_session :]
            if not row.task_ids.issuperset(ids):
                row.task_ids.update(ids)
                self._trim(row)
                changed.add(session.session_id)
        return changed | self._make_room()

    def created(self, session_id: str, at: float) -> set[str]:
        if not session_id or session_id in self._rows:
            return set()
        self._rows[session_id] = SessionRow(session_id, at)
        return {session_id} | self._make_room()

    def deleted(self, session_id: str) -> set[str]:
        if self._rows.pop(session_id, None) is None:
            return set()
        return {session_id}

    def add_task(self, session_id: str, task_id: str, at: float) -> set[str]:
        """Note that ``task_id`` belongs to ``session_id`` (creating the session if unseen)."""
        if not session_id:
            return set()
        row = self._rows.get(session_id)
        changed: set[str] = set()
        if row is None:
            row = self._rows[session_id] = SessionRow(session_id, at)
            changed = {session_id} | self._make_room()
        if task_id not in row.task_ids:
            row.task_ids.add(task_id)
            self._trim(row)
            changed.add(session_id)
        return changed

    def set_context_sizes(self, sizes: dict[str, int | None]) -> set[str]:
        changed: set[str] = set()
        for session_id, value in sizes.items():
            row = self._rows.get(session_id)
            if row is not None and (not row.context_known or row.context_bytes != value):
                row.context_bytes, row.context_known = value, True
                changed.add(session_id)
        return changed

    def _trim(self, row: SessionRow) -> None:
        # The count stays right for display purposes up to the cap; beyond it we keep a bounded set.
        while len(row.task_ids) > self.tasks_per_session:
            row.task_ids.pop()

    def _make_room(self) -> set[str]:
        if len(self._rows) <= self.cap:
            return set()
        target = self.cap - self.cap // 10 if self.cap >= 10 else self.cap
        dropped: set[str] = set()
        for session_id in list(self._rows):
            if len(self._rows) <= target:
                break
            if session_id in self.pinned:
                continue
            del self._rows[session_id]
            dropped.add(session_id)
        return dropped
