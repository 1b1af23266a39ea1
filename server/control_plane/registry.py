"""The service registry: which services a deployment has and which replicas serve them right now.

Replicas announce themselves (``replica.up``), heartbeat, and say goodbye (``replica.stopping``)
over the control topic. A replica whose heartbeats stop for ``liveness`` intervals is declared
gone; so is one whose process the supervisor saw exit. Every change is reported through
``on_change(kind, data)`` so the control plane can put it on the change feed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from llamactl.server.protocol import WorkerMessage
from llamactl.server.types import ReplicaState, ReplicaStatus, ServiceStatus

__all__ = ["FORGET_AFTER", "ServiceInfo", "ServiceRegistry"]

FORGET_AFTER = 20
"""Liveness windows after which a stopped or crashed replica leaves the registry (60 s by default)."""

ChangeCallback = Callable[[str, dict[str, Any]], None]


@dataclass
class ServiceInfo:
    """What the registry knows of a service's configuration."""

    service_id: str
    name: str
    desired_replicas: int = 1
    generation: int = 1


@dataclass
class _Service:
    info: ServiceInfo
    replicas: dict[str, ReplicaStatus] = field(default_factory=dict)
    last_error: str | None = None
    last_reload_at: float | None = None
    last_reload_error: str | None = None
    last_reload_seconds: float | None = None
    down_since: float | None = None
    """``time.time()`` when its last ready replica went (None while one is ready, or before any was)."""
    last_error_at: float | None = None


class ServiceRegistry:
    def __init__(
        self,
        services: Iterable[ServiceInfo],
        *,
        heartbeat_interval: float = 1.0,
        liveness: int = 3,
        on_change: ChangeCallback | None = None,
    ) -> None:
        self._services = {s.service_id: _Service(info=s) for s in services}
        self.heartbeat_interval = heartbeat_interval
        self.liveness = liveness
        self._gone_at: dict[str, float] = {}
        """replica id -> when it stopped, crashed or was forgotten: a stopped or crashed one is
        forgotten after FORGET_AFTER windows, and a forgotten one's entry goes as many later."""
        self._on_change = on_change or (lambda kind, data: None)

    # --- services ----------------------------------------------------------------------------

    def service_ids(self) -> list[str]:
        return list(self._services)

    def has_service(self, service_id: str) -> bool:
        return service_id in self._services

    def add_service(self, info: ServiceInfo) -> None:
        if info.service_id not in self._services:
            self._services[info.service_id] = _Service(info=info)
            self._on_change("service.added", {"service_id": info.service_id})

    def remove_service(self, service_id: str) -> None:
        if self._services.pop(service_id, None) is not None:
            self._on_change("service.removed", {"service_id": service_id})

    def status(self, service_id: str) -> ServiceStatus:
        svc = self._services[service_id]
        replicas = sorted(svc.replicas.values(), key=lambda r: r.replica_id)
        return ServiceStatus(
            service_id=service_id,
            name=svc.info.name,
            generation=svc.info.generation,
            replicas=replicas,
            desired_replicas=svc.info.desired_replicas,
            in_flight=sum(r.in_flight for r in replicas),
            last_error=svc.last_error,
            last_reload_at=svc.last_reload_at,
            last_reload_error=svc.last_reload_error,
            last_reload_seconds=svc.last_reload_seconds,
        )

    def statuses(self) -> list[ServiceStatus]:
        return [self.status(s) for s in self._services]

    def ready_replicas(self, service_id: str) -> int:
        return len(self.ready_replica_ids(service_id))

    def ready_replica_ids(self, service_id: str) -> list[str]:
        """The ids of the service's replicas that are ready (none for an unknown service)."""
        svc = self._services.get(service_id)
        if svc is None:
            return []
        return [rid for rid, r in svc.replicas.items() if r.state is ReplicaState.READY]

    def down(self, at_least: float, now: float | None = None) -> list[tuple[str, float, str | None]]:
        """The services that have had no ready replica for ``at_least`` seconds (a restart after a
        crash takes less): ``(service_id, seconds, error)``, with the error their code reported
        meanwhile (it does not load), if any."""
        now = time.time() if now is None else now
        found = []
        for service_id, svc in self._services.items():
            since = svc.down_since
            if since is None or now - since < at_least or self.ready_replicas(service_id):
                continue
            recent = svc.last_error_at is not None and svc.last_error_at >= since
            found.append((service_id, now - since, svc.last_error if recent else None))
        return found

    # --- replica reports ---------------------------------------------------------------------

    def replica_up(self, msg: WorkerMessage) -> None:
        svc = self._services.get(msg.service_id)
        if svc is None or self._stale(msg):
            return
        was_ready = self.ready_replicas(msg.service_id) > 0
        replica = svc.replicas.get(msg.replica_id)
        if replica is None:
            replica = ReplicaStatus(replica_id=msg.replica_id, service_id=msg.service_id)
            svc.replicas[msg.replica_id] = replica
        replica.generation = msg.generation
        replica.pid = msg.pid
        replica.host = msg.host
        replica.max_concurrency = msg.max_concurrency
        replica.concurrency_limit = msg.concurrency_limit
        replica.in_flight = msg.in_flight
        replica.last_heartbeat = time.time()
        self._gone_at.pop(msg.replica_id, None)
        if replica.state is not ReplicaState.READY:
            replica.state = ReplicaState.READY
            self._on_change("replica.up", _replica_data(replica))
        if not was_ready:
            svc.down_since = None
            self._on_change("service.up", {"service_id": msg.service_id})

    def _stale(self, msg: WorkerMessage) -> bool:
        """Whether the report was sent before the registry gave its replica up (it waited in the
        queue, or came through another server): it says nothing of the replica now. Unstamped
        reports count as new."""
        gone_at = self._gone_at.get(msg.replica_id)
        return gone_at is not None and 0.0 < msg.at <= gone_at

    def heartbeat(self, msg: WorkerMessage) -> None:
        svc = self._services.get(msg.service_id)
        replica = svc.replicas.get(msg.replica_id) if svc else None
        if replica is None or replica.state in (ReplicaState.STOPPED, ReplicaState.CRASHED):
            # A replica we had given up on (or never saw come up) is alive after all.
            self.replica_up(msg)
            return
        replica.in_flight = msg.in_flight
        if msg.concurrency_limit is not None:
            replica.concurrency_limit = msg.concurrency_limit
        replica.last_heartbeat = time.time()

    def replica_stopping(self, msg: WorkerMessage) -> None:
        svc = self._services.get(msg.service_id)
        replica = svc.replicas.get(msg.replica_id) if svc else None
        if replica is None:
            return
        if replica.state is ReplicaState.DRAINING:
            # Another server's heartbeat of a draining replica, as the replica mirror shares it.
            replica.in_flight = msg.in_flight
            replica.last_heartbeat = time.time()
        elif replica.state is ReplicaState.READY:
            replica.state = ReplicaState.DRAINING
            replica.in_flight = msg.in_flight
            replica.last_heartbeat = time.time()
            self._on_change("replica.draining", _replica_data(replica))
            self._maybe_service_down(msg.service_id)

    def draining(self, service_id: str, replica_id: str) -> bool:
        """Whether the replica said it stops and still finishes its tasks."""
        svc = self._services.get(service_id)
        replica = svc.replicas.get(replica_id) if svc else None
        return replica is not None and replica.state is ReplicaState.DRAINING

    def replica_failed(self, service_id: str, replica_id: str, error: str, generation: int = 1) -> None:
        """The replica could not load its code (or crashed): record the error."""
        svc = self._services.get(service_id)
        if svc is None:
            return
        if generation == svc.info.generation:
            svc.last_error = error
            svc.last_error_at = time.time()
        replica = svc.replicas.get(replica_id)
        if replica is None:
            replica = ReplicaStatus(replica_id=replica_id, service_id=service_id, generation=generation)
            svc.replicas[replica_id] = replica
        replica.last_error = error
        self._replica_gone(service_id, replica, ReplicaState.CRASHED)

    # --- generations (hot reload) --------------------------------------------------------------

    def generation(self, service_id: str) -> int:
        return self._services[service_id].info.generation

    def generation_state(self, service_id: str, generation: int) -> tuple[int, str | None]:
        """How many replicas of ``generation`` are ready, and the first error one of them reported."""
        svc = self._services[service_id]
        ready, error = 0, None
        for replica in svc.replicas.values():
            if replica.generation != generation:
                continue
            if replica.state is ReplicaState.READY:
                ready += 1
            elif replica.state is ReplicaState.CRASHED and replica.last_error and error is None:
                error = replica.last_error
        return ready, error

    def taking_tasks(self, service_id: str, replica_ids: list[str]) -> bool:
        """Whether any of these replicas is still ready for new tasks (not draining or gone)."""
        svc = self._services.get(service_id)
        if svc is None:
            return False
        return any(
            (replica := svc.replicas.get(rid)) is not None and replica.state is ReplicaState.READY
            for rid in replica_ids
        )

    def reloaded(self, info: ServiceInfo, at: float, seconds: float) -> None:
        """A new generation took over (its replicas ready ``seconds`` after the reload began):
        it is the one whose errors count now."""
        svc = self._services[info.service_id]
        svc.info = info
        svc.last_error = None
        svc.last_reload_at = at
        svc.last_reload_error = None
        svc.last_reload_seconds = seconds
        self._on_change(
            "service.reloaded",
            {"service_id": info.service_id, "generation": info.generation, "seconds": round(seconds, 3)},
        )

    def reload_failed(self, service_id: str, generation: int, error: str, at: float, seconds: float) -> None:
        """A new generation did not get ready (after ``seconds``); the old one keeps serving."""
        svc = self._services[service_id]
        svc.last_reload_at = at
        svc.last_reload_error = error
        svc.last_reload_seconds = seconds
        data = {"service_id": service_id, "generation": generation, "error": error}
        self._on_change("service.reload_failed", {**data, "seconds": round(seconds, 3)})

    def replica_exited(self, service_id: str, replica_id: str, *, requested: bool, restarts: int) -> None:
        """The supervisor saw the replica's process end."""
        svc = self._services.get(service_id)
        if svc is None:
            return
        replica = svc.replicas.get(replica_id)
        if replica is None:
            return
        replica.restarts = restarts
        self._replica_gone(service_id, replica, ReplicaState.STOPPED if requested else ReplicaState.CRASHED)

    def forget_replica(self, service_id: str, replica_id: str) -> None:
        """Drop a replica that is gone for good (a retired generation's, a failed start's)."""
        svc = self._services.get(service_id)
        self._gone_at[replica_id] = time.time()  # a late report of it brings no ghost back
        if svc is not None and svc.replicas.pop(replica_id, None) is not None:
            self._on_change("replica.removed", {"service_id": service_id, "replica_id": replica_id})

    def expire(self, now: float | None = None) -> list[ReplicaStatus]:
        """Declare gone every replica silent for ``liveness`` heartbeat intervals (a draining one
        said goodbye: it stopped; a ready one crashed), and forget the ones gone for
        ``FORGET_AFTER`` such windows (each run of a worker on another host has new ids)."""
        now = time.time() if now is None else now
        limit = self.heartbeat_interval * self.liveness
        gone: list[ReplicaStatus] = []
        for service_id, svc in self._services.items():
            for replica in list(svc.replicas.values()):
                alive = replica.state in (ReplicaState.READY, ReplicaState.DRAINING)
                if alive and replica.last_heartbeat is not None and now - replica.last_heartbeat > limit:
                    if replica.state is ReplicaState.DRAINING:
                        self._replica_gone(service_id, replica, ReplicaState.STOPPED)
                    else:
                        replica.last_error = replica.last_error or f"no heartbeat for {limit:.1f}s"
                        svc.last_error = (
                            f"its worker {replica.replica_id} stopped reporting ({limit:g} s without a "
                            "heartbeat): it is stopped, frozen, or cut off from the message queue"
                        )
                        svc.last_error_at = now
                        self._replica_gone(service_id, replica, ReplicaState.CRASHED)
                    gone.append(replica)
                elif not alive and now - self._gone_at.get(replica.replica_id, now) > limit * FORGET_AFTER:
                    self.forget_replica(service_id, replica.replica_id)
        known = {rid for svc in self._services.values() for rid in svc.replicas}
        for replica_id, at in list(self._gone_at.items()):
            if replica_id not in known and now - at > limit * FORGET_AFTER:
                del self._gone_at[replica_id]
        return gone

    def _replica_gone(self, service_id: str, replica: ReplicaStatus, state: ReplicaState) -> None:
        if replica.state in (ReplicaState.STOPPED, ReplicaState.CRASHED) and replica.state is state:
            return
        was_serving = replica.state in (ReplicaState.READY, ReplicaState.DRAINING)
        replica.state = state
        self._gone_at[replica.replica_id] = time.time()
        replica.in_flight = 0
        if was_serving:
            self._on_change("replica.down", _replica_data(replica))
        self._maybe_service_down(service_id)

    def _maybe_service_down(self, service_id: str) -> None:
        svc = self._services[service_id]
        if self.ready_replicas(service_id) == 0 and svc.replicas and svc.down_since is None:
            svc.down_since = time.time()
            self._on_change("service.down", {"service_id": service_id, "last_error": svc.last_error})


def _replica_data(replica: ReplicaStatus) -> dict[str, Any]:
    return replica.model_dump(mode="json")
