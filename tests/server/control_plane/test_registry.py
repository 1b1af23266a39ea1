from __future__ import annotations

import time
from typing import Any

from llamactl.server.control_plane import ServiceInfo, ServiceRegistry
from llamactl.server.control_plane.registry import FORGET_AFTER
from llamactl.server.protocol import WorkerMessage, WorkerMessageKind
from llamactl.server.types import ReplicaState


def _msg(kind: WorkerMessageKind, replica: str = "echo#1", in_flight: int = 0) -> WorkerMessage:
    return WorkerMessage(kind=kind, replica_id=replica, service_id="echo", pid=123, in_flight=in_flight)


def _registry(changes: list[tuple[str, dict[str, Any]]]) -> ServiceRegistry:
    return ServiceRegistry(
        [ServiceInfo(service_id="echo", name="Echo", desired_replicas=2)],
        heartbeat_interval=1.0,
        liveness=3,
        on_change=lambda kind, data: changes.append((kind, data)),
    )


def test_the_first_ready_replica_brings_the_service_up_once() -> None:
    changes: list[tuple[str, dict[str, Any]]] = []
    registry = _registry(changes)
    registry.replica_up(_msg(WorkerMessageKind.REPLICA_UP, "echo#1"))
    registry.replica_up(_msg(WorkerMessageKind.REPLICA_UP, "echo#2"))
    assert [k for k, _ in changes] == ["replica.up", "service.up", "replica.up"]
    status = registry.status("echo")
    assert status.ready and len(status.replicas) == 2 and status.desired_replicas == 2


def test_heartbeats_update_in_flight_counts() -> None:
    registry = _registry([])
    registry.replica_up(_msg(WorkerMessageKind.REPLICA_UP))
    registry.heartbeat(_msg(WorkerMessageKind.REPLICA_HEARTBEAT, in_flight=3))
    assert registry.status("echo").in_flight == 3


def test_heartbeats_carry_how_many_a_replica_starts_at_once() -> None:
    registry = _registry([])
    registry.replica_up(_msg(WorkerMessageKind.REPLICA_UP))
    beat = _msg(WorkerMessageKind.REPLICA_HEARTBEAT).model_copy(update={"concurrency_limit": 4})
    registry.heartbeat(beat)
    registry.heartbeat(_msg(WorkerMessageKind.REPLICA_HEARTBEAT))  # one without: the last one stands
    assert registry.status("echo").replicas[0].concurrency_limit == 4


def test_a_silent_replica_is_declared_gone_and_the_service_down() -> None:
    changes: list[tuple[str, dict[str, Any]]] = []
    registry = _registry(changes)
    registry.replica_up(_msg(WorkerMessageKind.REPLICA_UP))
    assert registry.expire(now=time.time() + 1.0) == []
    gone = registry.expire(now=time.time() + 10.0)
    assert [r.replica_id for r in gone] == ["echo#1"]
    assert gone[0].state is ReplicaState.CRASHED
    assert [k for k, _ in changes][-2:] == ["replica.down", "service.down"]
    assert not registry.status("echo").ready


def test_a_service_down_for_a_silent_replica_says_so() -> None:
    """Before: no error, and `status` said "its workers keep exiting or starting: the server's
    output says why" for a worker that was stopped, where the output said nothing."""
    registry = _registry([])
    registry.replica_up(_msg(WorkerMessageKind.REPLICA_UP))
    now = time.time() + 10.0
    registry.expire(now=now)
    [(_, _, error)] = registry.down(at_least=5.0, now=now + 6.0)
    assert error == (
        "its worker echo#1 stopped reporting (3 s without a heartbeat): it is stopped, frozen, or "
        "cut off from the message queue"
    )


def test_a_heartbeat_from_a_replica_given_up_on_brings_it_back() -> None:
    changes: list[tuple[str, dict[str, Any]]] = []
    registry = _registry(changes)
    registry.replica_up(_msg(WorkerMessageKind.REPLICA_UP))
    registry.expire(now=time.time() + 10.0)
    registry.heartbeat(_msg(WorkerMessageKind.REPLICA_HEARTBEAT))
    assert registry.status("echo").ready
    assert [k for k, _ in changes][-2:] == ["replica.up", "service.up"]


def test_a_load_failure_is_the_services_last_error() -> None:
    registry = _registry([])
    registry.replica_failed("echo", "echo#1", "ModuleNotFoundError: No module named 'flow'")
    status = registry.status("echo")
    assert status.last_error == "ModuleNotFoundError: No module named 'flow'"
    assert status.replicas[0].state is ReplicaState.CRASHED


def test_a_draining_replica_no_longer_counts_as_ready() -> None:
    changes: list[tuple[str, dict[str, Any]]] = []
    registry = _registry(changes)
    registry.replica_up(_msg(WorkerMessageKind.REPLICA_UP))
    registry.replica_stopping(_msg(WorkerMessageKind.REPLICA_STOPPING))
    assert registry.status("echo").replicas[0].state is ReplicaState.DRAINING
    assert [k for k, _ in changes][-2:] == ["replica.draining", "service.down"]


def test_a_draining_replica_that_falls_silent_stopped_and_is_forgotten_later() -> None:
    """A worker on another host drained on SIGTERM and exited: no supervisor here saw it."""
    changes: list[tuple[str, dict[str, Any]]] = []
    registry = _registry(changes)
    registry.replica_up(_msg(WorkerMessageKind.REPLICA_UP, "echo#far-1"))
    registry.replica_stopping(_msg(WorkerMessageKind.REPLICA_STOPPING, "echo#far-1"))
    registry.expire(now=time.time() + 4)
    (replica,) = registry.status("echo").replicas
    assert replica.state is ReplicaState.STOPPED and replica.last_error is None
    registry.expire(now=time.time() + 4 + 3 * FORGET_AFTER + 1)
    assert registry.status("echo").replicas == []
    assert changes[-1] == ("replica.removed", {"service_id": "echo", "replica_id": "echo#far-1"})


def test_a_service_without_a_ready_replica_for_a_while_is_down_with_the_error_of_that_time() -> None:
    registry = _registry([])
    registry.replica_failed("echo", "echo#1", "an error of an earlier start")
    registry.replica_up(_msg(WorkerMessageKind.REPLICA_UP))
    assert registry.down(at_least=5.0) == []
    registry.replica_exited("echo", "echo#1", requested=False, restarts=1)  # killed
    start = time.time()
    assert registry.down(at_least=5.0, now=start + 1.0) == []  # a restart takes less
    [(service, seconds, error)] = registry.down(at_least=5.0, now=start + 6.0)
    assert (service, error) == ("echo", None) and 5.5 < seconds < 7.0  # the earlier error is not this one
    registry.replica_failed("echo", "echo#1", "ImportError: broken\ntraceback")
    [(_, _, error)] = registry.down(at_least=5.0, now=start + 7.0)
    assert error == "ImportError: broken\ntraceback"
    registry.replica_up(_msg(WorkerMessageKind.REPLICA_UP))
    assert registry.down(at_least=5.0, now=start + 8.0) == []
