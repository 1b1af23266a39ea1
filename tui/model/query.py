"""Which tasks the tasks table shows, in which order: the ``/`` filter and the sort column."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from llamactl.tui.model.format import id_matches
from llamactl.tui.model.tasks import STATUS_ORDER, TaskRow

__all__ = ["SORTS", "TaskQuery", "select_tasks"]

_FIELDS = ("status", "service", "session", "replica", "task", "error")


def _text(row: TaskRow) -> str:
    status = f"{row.status.value} {row.shown_status}"  # asking: a running task, shown so
    return " ".join(
        (row.task_id, status, row.service_id, row.session_id, row.replica_id or "", row.error or "")
    ).lower()


SORTS: dict[str, tuple[Callable[[TaskRow], Any], bool]] = {
    "age": (lambda r: r.created_at, True),
    "status": (lambda r: (STATUS_ORDER[r.status], -r.created_at), False),
    "service": (lambda r: (r.service_id, -r.created_at), False),
    "task": (lambda r: r.task_id, False),
    "replica": (lambda r: (r.replica_id or "~", -r.created_at), False),
    "attempt": (lambda r: (r.attempts, r.created_at), True),
    "duration": (lambda r: (r.finished_at or 0) - (r.started_at or r.finished_at or 0), True),
}
"""Column -> (sort key, whether it sorts descending by default). Age: newest first."""


@dataclass(frozen=True)
class TaskQuery:
    """A parsed filter: words that must all appear, and ``field:value`` terms.

    ``running echo`` matches tasks whose id, status, service, session, replica or error contain both
    words; ``status:failed,cancelled service:echo`` matches by field (values are prefixes).
    """

    text: str = ""
    words: tuple[str, ...] = ()
    fields: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> TaskQuery:
        words: list[str] = []
        fields: dict[str, tuple[str, ...]] = {}
        for token in text.lower().split():
            name, sep, value = token.partition(":")
            if sep and name in _FIELDS and value:
                fields[name] = fields.get(name, ()) + tuple(v for v in value.split(",") if v)
            else:
                words.append(token)
        return cls(text=text.strip(), words=tuple(words), fields=fields)

    def __bool__(self) -> bool:
        return bool(self.words or self.fields)

    def matches(self, row: TaskRow) -> bool:
        for name, values in self.fields.items():
            if name == "status":  # a task asking is running too: either name matches it
                candidates: tuple[str, ...] = (row.status.value, row.shown_status)
            else:
                candidates = (
                    {
                        "service": row.service_id,
                        "session": row.session_id,
                        "replica": row.replica_id or "",
                        "task": row.task_id,
                        "error": row.error or "",
                    }[name].lower(),
                )
            if not any(_field_matches(name, c, v) for c in candidates for v in values):
                return False
        if self.words:
            text = _text(row)
            return all(word in text for word in self.words)
        return True


def _field_matches(name: str, value: str, wanted: str) -> bool:
    """An error matches anywhere in it, an id by its start or its end (tables show the end), any
    other field by its start."""
    if name == "error":
        return wanted in value
    if name in ("task", "session"):
        return id_matches(value, wanted)
    return value.startswith(wanted)


def select_tasks(
    rows: Iterable[TaskRow],
    *,
    session_id: str | None = None,
    query: TaskQuery | None = None,
    sort: str = "age",
    reverse: bool = False,
    limit: int,
) -> list[TaskRow]:
    """The first ``limit`` rows in ``sort`` order (``reverse`` flips the column's usual direction)."""
    key, descending = SORTS[sort]
    if reverse:
        descending = not descending
    chosen = (
        r
        for r in rows
        if (session_id is None or r.session_id == session_id) and (query is None or query.matches(r))
    )
    if descending:
        return heapq.nlargest(limit, chosen, key=key)
    return heapq.nsmallest(limit, chosen, key=key)
