"""The deployment's services as the dashboard shows them: status from the API, kept live by the feed."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from llamactl.server.types import ChangeEvent, ReplicaState, ReplicaStatus, ServiceStatus

__all__ = ["TASK_COUNTERS", "ServiceBook", "ServiceRow"]

TASK_COUNTERS = ("queued", "running", "completed", "failed", "cancelled")


@dataclass(slots=True)
class ServiceRow:
    """A service's last known status (with its last reload's outcome and duration) and its task counters."""

    status: ServiceStatus
    counts: dict[str, int] | None = None
    """Its tasks by status (the server's counters); None when the server does not report them."""
    replicas: dict[str, ReplicaStatus] = field(default_factory=dict)

    @property
    def service_id(self) -> str:
        return self.status.service_id

    @property
    def ready(self) -> int:
        return sum(1 for r in self.replicas.values() if r.state is ReplicaState.READY)

    @property
    def wanted(self) -> int:
        return self.status.desired_replicas

    @property
    def state(self) -> str:
        """``up``, ``degraded`` (fewer ready than wanted), ``starting``, ``down``, or ``remote`` (the
        server runs no replica of it, and no ``llamactl worker`` elsewhere is up yet)."""
        ready = self.ready
        if self.wanted == 0 and ready == 0:
            return "remote"
        if ready >= self.wanted:
            return "up"
        if ready > 0:
            return "degraded"
        if any(r.state is ReplicaState.STARTING for r in self.replicas.values()) or not self.replicas:
            return "starting"
        return "down"


class ServiceBook:
    """Services by id, in the deployment's order."""

    def __init__(self) -> None:
        self._rows: dict[str, ServiceRow] = {}

    def __iter__(self) -> Iterator[ServiceRow]:
        return iter(self._rows.values())

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, service_id: str) -> ServiceRow | None:
        return self._rows.get(service_id)

    def ids(self) -> list[str]:
        return list(self._rows)

    def load(self, statuses: Iterable[ServiceStatus]) -> set[str]:
        """Replace every service's status with a fresh listing; returns every id that changed."""
        fresh: dict[str, ServiceRow] = {}
        for status in statuses:
            old = self._rows.get(status.service_id)
            row = ServiceRow(
                status=status,
                counts=old.counts if old else None,
                replicas={r.replica_id: r for r in status.replicas},
            )
            fresh[status.service_id] = row
        changed = set(fresh) ^ set(self._rows) | {
            sid for sid, row in fresh.items() if sid in self._rows and self._rows[sid].status != row.status
        }
        self._rows = fresh
        return changed

    def set_counts(self, counts: Mapping[str, Mapping[str, Any]]) -> set[str]:
        """Each service's task counters (``service_tasks`` of the state snapshot)."""
        changed: set[str] = set()
        for service_id, row in self._rows.items():
            raw = counts.get(service_id)
            if raw is None:
                continue
            value = {name: int(raw.get(name) or 0) for name in TASK_COUNTERS}
            if value != row.counts:
                row.counts = value
                changed.add(service_id)
        return changed

    def apply(self, change: ChangeEvent) -> tuple[set[str], bool]:
        """Apply a ``service.*`` or ``replica.*`` change.

        Returns the ids it changed, and whether the listing must be fetched again (a service was
        added or removed, or the change names one we do not know).
        """
        data = change.data
        service_id = str(data.get("service_id") or "")
        row = self._rows.get(service_id)
        if change.kind in ("service.added", "service.removed") or row is None:
            return set(), True
        kind = change.kind
        if kind in ("replica.up", "replica.draining", "replica.down"):
            replica = ReplicaStatus.model_validate(data)
            row.replicas[replica.replica_id] = replica
        elif kind == "replica.removed":
            row.replicas.pop(str(data.get("replica_id")), None)
        elif kind == "service.down":
            row.status.last_error = data.get("last_error") or row.status.last_error
        elif kind == "service.reloaded":
            row.status.generation = int(data.get("generation") or row.status.generation)
            row.status.last_reload_at = change.at
            row.status.last_reload_error = None
            row.status.last_error = None
            row.status.last_reload_seconds = _seconds(data)
        elif kind == "service.reload_failed":
            row.status.last_reload_at = change.at
            row.status.last_reload_error = str(data.get("error") or "reload failed")
            row.status.last_reload_seconds = _seconds(data)
        elif kind != "service.up":
            return set(), False
        return {service_id}, False


def _seconds(data: Mapping[str, Any]) -> float | None:
    value = data.get("seconds")
    return float(value) if isinstance(value, int | float) else None
