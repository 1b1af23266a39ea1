"""Servers sharing a store learn each replica's reports through it (the last one applied per
replica). A replica that said it stops keeps heartbeating while its tasks finish: a server that
looks at the store only after such a heartbeat must still know it drains."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest_asyncio

from llamactl.server.control_plane import ServiceInfo, ServiceRegistry
from llamactl.server.control_plane.replica_mirror import ReplicaMirror
from llamactl.server.protocol import WorkerMessage, WorkerMessageKind
from llamactl.server.state.memory import MemoryStateStore
from llamactl.server.types import ReplicaState


def _registry() -> ServiceRegistry:
    return ServiceRegistry([ServiceInfo(service_id="echo", name="Echo")], heartbeat_interval=1.0, liveness=3)


def _msg(kind: WorkerMessageKind, in_flight: int = 0) -> WorkerMessage:
    return WorkerMessage(
        kind=kind, replica_id="echo#h1-1", service_id="echo", host="h1", in_flight=in_flight, at=time.time()
    )


@pytest_asyncio.fixture
async def store() -> AsyncIterator[MemoryStateStore]:
    store = MemoryStateStore()
    await store.start()
    try:
        yield store
    finally:
        await store.close()


async def _heard(registry: ServiceRegistry, mirror: ReplicaMirror, msg: WorkerMessage) -> None:
    """What the inbox does with a replica report it consumed."""
    if msg.kind is WorkerMessageKind.REPLICA_UP:
        registry.replica_up(msg)
    elif msg.kind is WorkerMessageKind.REPLICA_HEARTBEAT:
        registry.heartbeat(msg)
    else:
        registry.replica_stopping(msg)
    await mirror.record(msg)


async def test_a_draining_replica_seen_through_a_later_heartbeat_is_draining(store: MemoryStateStore) -> None:
    heard, other = _registry(), _registry()
    heard_mirror, other_mirror = ReplicaMirror(store, "d", heard), ReplicaMirror(store, "d", other)
    await _heard(heard, heard_mirror, _msg(WorkerMessageKind.REPLICA_UP))
    await other_mirror.sync()
    assert other.ready_replicas("echo") == 1
    await _heard(heard, heard_mirror, _msg(WorkerMessageKind.REPLICA_STOPPING, in_flight=2))
    await _heard(heard, heard_mirror, _msg(WorkerMessageKind.REPLICA_HEARTBEAT, in_flight=1))
    await other_mirror.sync()
    (replica,) = other.status("echo").replicas
    assert (replica.state, replica.in_flight) == (ReplicaState.DRAINING, 1)
    assert other.ready_replicas("echo") == 0
    # Its heartbeats keep it draining (not stopped) while its tasks finish ...
    await _heard(heard, heard_mirror, _msg(WorkerMessageKind.REPLICA_HEARTBEAT, in_flight=1))
    await other_mirror.sync()
    assert other.expire(now=time.time() + 2.0) == []
    assert other.status("echo").replicas[0].state is ReplicaState.DRAINING
    # ... and once it has exited, it stopped: it did not crash, and its service has no error.
    (gone,) = other.expire(now=time.time() + 4.0)
    assert gone.state is ReplicaState.STOPPED
    assert other.status("echo").last_error is None
