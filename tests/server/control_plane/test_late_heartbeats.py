"""A heartbeat a worker sent before it exited can be applied after the registry has given the worker
up (its report waited behind others in the queue, or another control plane heard it and it comes
through the shared store): it must not bring the worker back as a ready replica."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio

from llamactl.server.control_plane import ServiceInfo, ServiceRegistry
from llamactl.server.control_plane.replica_mirror import ReplicaMirror
from llamactl.server.protocol import WorkerMessage, WorkerMessageKind
from llamactl.server.state.memory import MemoryStateStore
from llamactl.server.types import ReplicaState


def _registry(changes: list[tuple[str, dict[str, Any]]] | None = None) -> ServiceRegistry:
    return ServiceRegistry(
        [ServiceInfo(service_id="echo", name="Echo", desired_replicas=1, generation=2)],
        heartbeat_interval=1.0,
        liveness=3,
        on_change=(lambda kind, data: changes.append((kind, data))) if changes is not None else None,
    )


def _msg(kind: WorkerMessageKind, replica: str, *, generation: int, at: float) -> WorkerMessage:
    return WorkerMessage(
        kind=kind, replica_id=replica, service_id="echo", generation=generation, pid=7, at=at
    )


def _reloaded(registry: ServiceRegistry) -> float:
    """Generation 1's ``echo#1`` drained and was retired, generation 2's ``echo#1@g2`` serves;
    return when ``echo#1`` sent its last heartbeat (just before its process ended)."""
    registry.replica_up(_msg(WorkerMessageKind.REPLICA_UP, "echo#1", generation=1, at=time.time()))
    registry.replica_up(_msg(WorkerMessageKind.REPLICA_UP, "echo#1@g2", generation=2, at=time.time()))
    registry.replica_stopping(
        _msg(WorkerMessageKind.REPLICA_STOPPING, "echo#1", generation=1, at=time.time())
    )
    last_beat = time.time()
    registry.replica_exited("echo", "echo#1", requested=True, restarts=0)
    registry.forget_replica("echo", "echo#1")
    return last_beat


def test_a_retired_workers_last_heartbeat_applied_late_brings_no_ghost_back() -> None:
    changes: list[tuple[str, dict[str, Any]]] = []
    registry = _registry(changes)
    last_beat = _reloaded(registry)
    seen = len(changes)
    registry.heartbeat(_msg(WorkerMessageKind.REPLICA_HEARTBEAT, "echo#1", generation=1, at=last_beat))
    assert [r.replica_id for r in registry.status("echo").replicas] == ["echo#1@g2"]
    assert registry.ready_replicas("echo") == 1
    assert changes[seen:] == []
    # ... nor, once the ghost falls silent, a crash of a worker that only ended.
    gone = registry.expire(now=time.time() + 4.0)
    assert [r.replica_id for r in gone] == ["echo#1@g2"]


def test_a_killed_workers_late_heartbeat_does_not_make_its_service_look_up() -> None:
    """The supervisor saw the process die; its restart (same id) is still importing."""
    registry = _registry()
    registry.replica_up(_msg(WorkerMessageKind.REPLICA_UP, "echo#1", generation=2, at=time.time()))
    last_beat = time.time()
    registry.replica_exited("echo", "echo#1", requested=False, restarts=1)
    registry.heartbeat(_msg(WorkerMessageKind.REPLICA_HEARTBEAT, "echo#1", generation=2, at=last_beat))
    assert registry.ready_replicas("echo") == 0
    assert registry.status("echo").replicas[0].state is ReplicaState.CRASHED
    # The restarted process says it is up: that one counts.
    registry.replica_up(_msg(WorkerMessageKind.REPLICA_UP, "echo#1", generation=2, at=time.time()))
    assert registry.ready_replicas("echo") == 1


def test_a_replica_given_up_on_that_heartbeats_again_afterwards_is_back() -> None:
    """A worker taken for dead (stopped, then continued) that reports again is alive after all."""
    registry = _registry()
    registry.replica_up(_msg(WorkerMessageKind.REPLICA_UP, "echo#far-1", generation=2, at=time.time()))
    registry.expire(now=time.time() + 10.0)
    assert registry.ready_replicas("echo") == 0
    beat = _msg(WorkerMessageKind.REPLICA_HEARTBEAT, "echo#far-1", generation=2, at=time.time() + 0.01)
    registry.heartbeat(beat)
    assert registry.ready_replicas("echo") == 1


@pytest_asyncio.fixture
async def store() -> AsyncIterator[MemoryStateStore]:
    store = MemoryStateStore()
    await store.start()
    try:
        yield store
    finally:
        await store.close()


async def test_a_heartbeat_another_server_heard_brings_no_retired_worker_back(
    store: MemoryStateStore,
) -> None:
    """Two servers share the store; the other one applied (and stored) the old worker's last
    heartbeat, this one retired that worker before its next look at the store."""
    here, there = _registry(), _registry()
    mirror_here = ReplicaMirror(store, "d", here)
    mirror_there = ReplicaMirror(store, "d", there)
    last_beat = _reloaded(here)
    beat = _msg(WorkerMessageKind.REPLICA_HEARTBEAT, "echo#1", generation=1, at=last_beat)
    there.heartbeat(beat)
    await mirror_there.record(beat)
    await mirror_here.sync()
    assert [r.replica_id for r in here.status("echo").replicas] == ["echo#1@g2"]


def test_what_is_kept_of_forgotten_replicas_goes_in_time() -> None:
    """Workers restart often over weeks, each run of ``llamactl worker`` with new ids."""
    registry = _registry()
    start = time.time()
    for n in range(100):
        replica = f"echo#h1-{n}"
        registry.replica_up(_msg(WorkerMessageKind.REPLICA_UP, replica, generation=2, at=start))
        registry.replica_exited("echo", replica, requested=True, restarts=0)
    registry.expire(now=start + 3 * 20 + 1)  # forgotten after FORGET_AFTER windows ...
    assert registry.status("echo").replicas == []
    registry.expire(now=start + 2 * (3 * 20) + 2)  # ... and what guards against their late reports later
    assert registry._gone_at == {}
