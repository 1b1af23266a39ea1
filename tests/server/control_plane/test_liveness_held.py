"""The control plane's own process held (Ctrl-Z, SIGSTOP, a debugger) or the machine asleep for
longer than the liveness window.

Before: the liveness watch's first look after it declared every replica gone (nobody had been
heard, because nobody could be), and so the server's silence killed its healthy workers."""

from __future__ import annotations

import asyncio
import os
import time

from llamactl.server.control_plane import ControlPlane, ServiceRegistry
from llamactl.server.control_plane.registry import ServiceInfo
from llamactl.server.orchestrator import Orchestrator
from llamactl.server.protocol import WorkerMessage, WorkerMessageKind
from llamactl.server.types import ReplicaState
from tests.e2e.waiting import wait_until

from .conftest import DEPLOYMENT, Harness

HEARTBEAT = 0.2
LIVENESS = 10  # a window of 2 s


async def test_a_held_control_plane_gives_its_replicas_a_window_to_be_heard_again(harness: Harness) -> None:
    registry = ServiceRegistry(
        [ServiceInfo(service_id="a", name="A")], heartbeat_interval=HEARTBEAT, liveness=LIVENESS
    )
    plane = ControlPlane(
        DEPLOYMENT,
        store=harness.store,
        queue=await harness.queue(),
        orchestrator=Orchestrator(DEPLOYMENT, ["a"], "a"),
        registry=registry,
    )
    await plane.start()
    harness.planes.append(plane)
    registry.replica_up(
        WorkerMessage(kind=WorkerMessageKind.REPLICA_UP, replica_id="a#1", service_id="a", pid=os.getpid())
    )

    def state() -> ReplicaState:
        return registry.status("a").replicas[0].state

    await asyncio.sleep(3 * HEARTBEAT)  # the watch is under way
    assert state() is ReplicaState.READY
    time.sleep(2.5 * HEARTBEAT * LIVENESS)  # noqa: ASYNC251  (the fault: this process held, 2.5 windows)
    await asyncio.sleep(0.5)  # the watch looks twice or more
    assert state() is ReplicaState.READY, registry.status("a")  # before: CRASHED
    await wait_until(lambda: state() is ReplicaState.CRASHED, 10)  # still silent after a window: gone
