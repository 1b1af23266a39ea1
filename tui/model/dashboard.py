"""Everything the dashboard shows, in one object: the books, the counters, and what each update changed."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from llamactl.client import DeploymentState
from llamactl.server.types import ChangeEvent, SessionDefinition, TaskRecord, TaskStatus
from llamactl.tui.model.services import TASK_COUNTERS, ServiceBook
from llamactl.tui.model.sessions import SessionBook
from llamactl.tui.model.tasks import TaskBook
from llamactl.tui.model.throughput import Throughput

__all__ = ["BACKENDS", "THROUGHPUT_SPAN", "BackendOutage", "DashboardModel", "Delta"]

THROUGHPUT_SPAN = 2.0
"""Seconds at most over which the tasks finished between two counter fetches are spread."""


BACKENDS = {"message_queue": "message queue", "state_store": "state store"}
"""The deployment's backends a server may lose, as ``/state`` health names them, and as said."""


@dataclass(frozen=True)
class BackendOutage:
    """The server cannot reach (or write to) the deployment's message queue or state store (from
    ``/state`` health, the change feed's ``queue.*`` entries or its ``health`` notices)."""

    backend: str
    """A key of :data:`BACKENDS`."""
    where: str
    since: float
    error: str
    state: str = "unreachable"
    """``unreachable``, or ``refusing writes`` (it answers but cannot take writes for now)."""


@dataclass
class Delta:
    """What an update changed, so each view redraws only that."""

    tasks: set[str] = field(default_factory=set)
    sessions: set[str] = field(default_factory=set)
    services: set[str] = field(default_factory=set)
    services_stale: bool = False
    """A service appeared or went away: fetch the services again."""
    counts: bool = False
    finished_sessions: set[str] = field(default_factory=set)
    """Sessions one of whose tasks finished (their Context was saved again)."""
    reset: bool = False
    """Everything was replaced (a new deployment, or the server's state was reset)."""
    outage: bool = False
    """A backend became unreachable, or reachable again."""

    def merge(self, other: Delta) -> Delta:
        """Both changes (to redraw once for several updates)."""
        return Delta(
            tasks=self.tasks | other.tasks,
            sessions=self.sessions | other.sessions,
            services=self.services | other.services,
            services_stale=self.services_stale or other.services_stale,
            counts=self.counts or other.counts,
            finished_sessions=self.finished_sessions | other.finished_sessions,
            reset=self.reset or other.reset,
            outage=self.outage or other.outage,
        )

    def __bool__(self) -> bool:
        return bool(
            self.tasks
            or self.sessions
            or self.services
            or self.services_stale
            or self.counts
            or self.reset
            or self.outage
        )


class DashboardModel:
    """The dashboard's data for one deployment, bounded by the caps it is given."""

    def __init__(self, *, max_tasks: int, max_sessions: int, clock: Callable[[], float] = time.time) -> None:
        self.now = clock
        """The wall clock ages and durations are measured against (a fixed one in tests)."""
        self.tasks = TaskBook(max_tasks)
        self.sessions = SessionBook(max_sessions)
        self.services = ServiceBook()
        self.throughput = Throughput()
        self.counts: dict[str, int] = dict.fromkeys(TASK_COUNTERS, 0)
        """Deployment-wide task counts by status (the server's)."""
        self.has_service_counts = False
        """Whether the server reports per-service counters (else they are counted from known tasks)."""
        self._finished: tuple[float, int] | None = None
        """(when, how many tasks had finished) at the last state snapshot: throughput is the difference."""
        self.outages: dict[str, BackendOutage] = {}
        """The backends (keys of :data:`BACKENDS`) the server cannot reach or write to: since when, why."""

    def reset(self) -> None:
        self.tasks.clear()
        self.sessions.clear()
        self.services = ServiceBook()
        self.throughput = Throughput()
        self.counts = dict.fromkeys(TASK_COUNTERS, 0)
        self._finished = None
        self.outages = {}

    def load_snapshot(
        self,
        state: DeploymentState,
        tasks: Iterable[TaskRecord],
        sessions: Iterable[SessionDefinition],
        now: float,
    ) -> Delta:
        """Start from a snapshot (replacing what was shown)."""
        self.reset()
        delta = self.load_state(state)
        delta.tasks |= self.tasks.load(tasks)
        delta.sessions |= self.sessions.load(sessions, now)
        delta.reset = True
        return delta

    def load_state(self, state: DeploymentState) -> Delta:
        """Counters and services of a state snapshot."""
        delta = Delta(counts=True)
        self.counts = {name: int(state.tasks.get(name, 0)) for name in TASK_COUNTERS}
        self._count_throughput()
        delta.services = self.services.load(state.services)
        service_tasks = _service_tasks(state)
        self.has_service_counts = service_tasks is not None
        if service_tasks is not None:
            delta.services |= self.services.set_counts(service_tasks)
        delta.outage = self._set_outages(_outages((state.model_extra or {}).get("health")))
        return delta

    def _set_outages(self, outages: dict[str, BackendOutage]) -> bool:
        changed = outages != self.outages
        self.outages = outages
        return changed

    def _count_throughput(self) -> None:
        now = self.now()
        finished = self.counts["completed"] + self.counts["failed"] + self.counts["cancelled"]
        if self._finished is not None and finished >= self._finished[1]:
            # Counters are fetched right after changes arrive, so what finished since the last
            # fetch finished lately: spread it over the last few seconds, not over an idle hour.
            start = max(self._finished[0], now - THROUGHPUT_SPAN)
            self.throughput.add_span(start, now, finished - self._finished[1])
        self._finished = (now, finished)

    def apply(self, changes: Iterable[ChangeEvent]) -> Delta:
        """Apply change-feed entries in order."""
        delta = Delta()
        for change in changes:
            kind = change.kind
            if kind == "task.status":
                changed = self.tasks.apply_status(change.data, change.at)
                delta.tasks |= changed
                task_id = str(change.data.get("task_id") or "")
                session_id = str(change.data.get("session_id") or "")
                if not change.data.get("own_session"):  # one made for the task alone has no record
                    delta.sessions |= self.sessions.add_task(session_id, task_id, change.at)
                    if task_id in changed and change.data.get("status") in _FINAL:
                        delta.finished_sessions.add(session_id)
            elif kind == "session.created":
                delta.sessions |= self.sessions.created(str(change.data.get("session_id") or ""), change.at)
            elif kind == "session.deleted":
                delta.sessions |= self.sessions.deleted(str(change.data.get("session_id") or ""))
            elif kind == "queue.unreachable":
                data = change.data
                since = float(data.get("since") or change.at)
                self.outages = {
                    **self.outages,
                    "message_queue": BackendOutage(
                        "message_queue",
                        str(data.get("where") or "?"),
                        since,
                        str(data.get("error") or ""),
                        str(data.get("state") or "unreachable"),
                    ),
                }
                delta.outage = True
            elif kind == "queue.reachable":
                self.outages = {key: o for key, o in self.outages.items() if key != "message_queue"}
                delta.outage = True
            elif kind == "health":
                delta.outage |= self._set_outages(_outages(change.data))
            elif kind.startswith(("service.", "replica.")):
                changed, stale = self.services.apply(change)
                delta.services |= changed
                delta.services_stale |= stale
        return delta

    def service_counts(self, service_id: str) -> dict[str, int]:
        """A service's task counters: the server's, or counted from the tasks known here."""
        row = self.services.get(service_id)
        if row is not None and row.counts is not None:
            return row.counts
        counts = dict.fromkeys(TASK_COUNTERS, 0)
        for task in self.tasks:
            if task.service_id == service_id:
                counts[task.status.value] += 1
        return counts


_FINAL = {s.value for s in TaskStatus if s.is_final}


def _outages(health: object) -> dict[str, BackendOutage]:
    """The backends' outages as a server's health says (``/state``'s, or a ``health`` notice's
    data; a server that says nothing of a backend is taken to reach it)."""
    outages: dict[str, BackendOutage] = {}
    for key in BACKENDS:
        backend = health.get(key) if isinstance(health, dict) else None
        if not isinstance(backend, dict) or backend.get("reachable", True):
            continue
        since = backend.get("unreachable_since")
        outages[key] = BackendOutage(
            key,
            str(backend.get("where") or "?"),
            float(since) if isinstance(since, int | float) else 0.0,
            str(backend.get("error") or ""),
            str(backend.get("state") or "unreachable"),
        )
    return outages


def _service_tasks(state: DeploymentState) -> Mapping[str, Mapping[str, Any]] | None:
    raw = (state.model_extra or {}).get("service_tasks")
    if not isinstance(raw, dict):
        return None
    return {str(k): v for k, v in raw.items() if isinstance(v, dict)}
