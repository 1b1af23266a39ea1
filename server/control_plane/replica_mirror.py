"""What replicas report, shared by the control planes of one deployment through the state store.

Replica reports (up, heartbeat, stopping, failed) arrive on the control topic, and each goes to
one control plane. When several share a store, each plane stores the last report it applied per
replica (ns ``<deployment>/replicas``), and every heartbeat interval applies the ones the others
stored. So each server's registry, its ``/services`` status, its change feed and its hot reloads
know every replica of the deployment, on this host or another. Records of replicas silent for
long are removed by whichever plane sees them first.
"""

from __future__ import annotations

import logging
import time

from pydantic import ValidationError

from llamactl.server.control_plane.registry import ServiceRegistry
from llamactl.server.protocol import WorkerMessage, WorkerMessageKind
from llamactl.server.state.base import StateStore

__all__ = ["ReplicaMirror", "apply_replica_report"]

log = logging.getLogger(__name__)

_KEEP_SILENT = 10
"""Liveness windows after which a silent replica's record goes."""
_FIELDS = {
    "kind",
    "replica_id",
    "service_id",
    "generation",
    "pid",
    "host",
    "in_flight",
    "max_concurrency",
    "concurrency_limit",
}


def apply_replica_report(registry: ServiceRegistry, msg: WorkerMessage) -> None:
    """Apply a replica.* report to ``registry``."""
    if msg.kind is WorkerMessageKind.REPLICA_UP:
        registry.replica_up(msg)
    elif msg.kind is WorkerMessageKind.REPLICA_HEARTBEAT:
        registry.heartbeat(msg)
    elif msg.kind is WorkerMessageKind.REPLICA_STOPPING:
        registry.replica_stopping(msg)
    elif msg.kind is WorkerMessageKind.REPLICA_FAILED:
        error = msg.error or "the worker failed to start"
        if msg.traceback:
            error = f"{error}\n{msg.traceback}"
        registry.replica_failed(msg.service_id, msg.replica_id, error, msg.generation)


class ReplicaMirror:
    def __init__(self, store: StateStore, deployment: str, registry: ServiceRegistry) -> None:
        self._store = store
        self._registry = registry
        self.ns = f"{deployment}/replicas"
        self._applied: dict[str, float] = {}
        """replica id -> ``at`` of the newest report applied here."""

    @property
    def window(self) -> float:
        return self._registry.heartbeat_interval * self._registry.liveness

    async def record(self, msg: WorkerMessage) -> None:
        """A replica report this control plane applied: store it for the others."""
        self._applied[msg.replica_id] = max(msg.at, self._applied.get(msg.replica_id, 0.0))
        if msg.kind is WorkerMessageKind.REPLICA_HEARTBEAT and self._registry.draining(
            msg.service_id, msg.replica_id
        ):
            # Only the last report is kept: a heartbeat must not hide that the replica stops.
            msg = msg.model_copy(update={"kind": WorkerMessageKind.REPLICA_STOPPING})
        stored = msg.model_dump_json(include={*_FIELDS, "at", "error"})
        await self._store.put(self.ns, msg.replica_id, stored.encode())

    async def sync(self, now: float | None = None) -> int:
        """Apply the reports other control planes stored since the last look; return how many."""
        now = time.time() if now is None else now
        applied, seen = 0, set()
        after: str | None = None
        while page := await self._store.list(self.ns, after=after, limit=500):
            after = page[-1][0]
            for key, found in page:
                seen.add(key)
                try:
                    msg = WorkerMessage.model_validate_json(found.value)
                except (ValidationError, ValueError):
                    await self._store.delete(self.ns, key, found.version)
                    continue
                if now - msg.at > self.window * _KEEP_SILENT:
                    await self._store.delete(self.ns, key, found.version)  # long gone
                    continue
                if msg.at <= self._applied.get(key, 0.0):
                    continue
                self._applied[key] = msg.at
                if now - msg.at > self.window and msg.kind is not WorkerMessageKind.REPLICA_FAILED:
                    continue  # too old to say it is alive: the registry expires it on its own
                apply_replica_report(self._registry, msg)
                applied += 1
        for key in self._applied.keys() - seen:
            del self._applied[key]
        return applied
