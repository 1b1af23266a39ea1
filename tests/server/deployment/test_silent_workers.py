"""Which local workers the server kills for their silence: only a process that reported, was
declared gone by the liveness watch (or forgotten since), and has been silent past the limit.
Real worker-like processes under a real Supervisor, and a real registry fed their reports."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from llamactl.server.control_plane import ServiceRegistry
from llamactl.server.control_plane.registry import ServiceInfo
from llamactl.server.deployment.silent_workers import (
    CHECK_EVERY,
    SilentWorkers,
    StoppedWorkers,
    silent_limit,
)
from llamactl.server.protocol import WorkerMessage, WorkerMessageKind
from llamactl.server.supervisor import ProcessSpec, RestartPolicy, Supervisor
from tests.e2e.waiting import wait_until, wait_until_blocking

KEY = "s#1"
LIMIT = silent_limit(30.0)
CHECK = int(CHECK_EVERY)


@pytest.fixture
async def supervised() -> AsyncIterator[tuple[Supervisor, ServiceRegistry, SilentWorkers]]:
    supervisor = Supervisor()
    registry = ServiceRegistry([ServiceInfo(service_id="s", name="S")], heartbeat_interval=1.0)
    spec = ProcessSpec(name=KEY, argv=[sys.executable, "-c", "import time; time.sleep(600)"])
    await supervisor.start_replica(KEY, spec, RestartPolicy(initial_backoff=0.05))
    silent = SilentWorkers(
        "d", registry=registry, supervisor=supervisor, service_of={KEY: "s"}.get, limit=LIMIT
    )
    try:
        yield supervisor, registry, silent
    finally:
        await supervisor.close(grace=0.5)


def _pid(supervisor: Supervisor) -> int:
    pid = supervisor.replicas()[KEY].pid
    assert pid is not None
    return pid


def _report(registry: ServiceRegistry, pid: int) -> float:
    registry.replica_up(
        WorkerMessage(kind=WorkerMessageKind.REPLICA_UP, replica_id=KEY, service_id="s", pid=pid)
    )
    last = registry.status("s").replicas[0].last_heartbeat
    assert last is not None
    return last


async def test_a_worker_declared_gone_is_killed_only_past_the_limit(
    supervised: tuple[Supervisor, ServiceRegistry, SilentWorkers],
) -> None:
    supervisor, registry, silent = supervised
    pid = _pid(supervisor)
    last = _report(registry, pid)
    registry.expire(now=last + 10)  # the liveness watch: gone
    silent.check(now=last + LIMIT - 1)
    assert silent.killed == 0 and _pid(supervisor) == pid
    silent.check(now=last + LIMIT + 1)
    assert silent.killed == 1
    await wait_until(lambda: supervisor.replicas()[KEY].pid not in (None, pid), 10)  # restarted


async def test_a_process_that_never_reported_is_left_to_its_startup(
    supervised: tuple[Supervisor, ServiceRegistry, SilentWorkers],
) -> None:
    _, registry, silent = supervised
    last = _report(registry, pid=1)  # an earlier process of the replica reported, then went
    registry.expire(now=last + 10)
    silent.check(now=time.time() + 10 * LIMIT)
    assert silent.killed == 0


async def test_a_worker_the_liveness_watch_holds_back_on_is_not_killed(
    supervised: tuple[Supervisor, ServiceRegistry, SilentWorkers],
) -> None:
    """While the queue is down the watch declares nobody gone: their silence says nothing."""
    supervisor, registry, silent = supervised
    last = _report(registry, _pid(supervisor))
    silent.check(now=last + 10 * LIMIT)
    assert silent.killed == 0


async def test_a_worker_the_registry_forgot_since_is_still_killed(
    supervised: tuple[Supervisor, ServiceRegistry, SilentWorkers],
) -> None:
    supervisor, registry, silent = supervised
    last = _report(registry, _pid(supervisor))
    registry.expire(now=last + 10)
    silent.check(now=last + 11)  # seen gone
    registry.forget_replica("s", KEY)
    silent.check(now=last + LIMIT + 1)
    assert silent.killed == 1


# --- a host with no control plane (`llamactl worker`): the process's own state --------------


@pytest.fixture
async def stoppable() -> AsyncIterator[tuple[Supervisor, StoppedWorkers]]:
    supervisor = Supervisor()
    spec = ProcessSpec(name=KEY, argv=[sys.executable, "-c", "import time; time.sleep(600)"])
    await supervisor.start_replica(KEY, spec, RestartPolicy(initial_backoff=0.05))
    try:
        yield supervisor, StoppedWorkers("d", supervisor=supervisor, limit=LIMIT)
    finally:
        await supervisor.close(grace=0.5)


def _stop(pid: int) -> None:
    os.kill(pid, signal.SIGSTOP)
    wait_until_blocking(lambda: Path(f"/proc/{pid}/stat").read_bytes().split(b") ")[1][:1] == b"T", 10)


def _look(stopped: StoppedWorkers, start: float, end: float) -> None:
    """Look every CHECK seconds from ``start`` to ``end`` (both included), as ``run`` does."""
    at = start
    while at < end:
        stopped.check(now=at)
        at += CHECK
    stopped.check(now=end)


async def test_a_worker_stopped_past_the_limit_is_killed_and_starts_again(
    stoppable: tuple[Supervisor, StoppedWorkers],
) -> None:
    supervisor, stopped = stoppable
    pid = _pid(supervisor)
    assert supervisor.stopped(KEY) is False
    t0 = time.time()
    stopped.check(now=t0)  # seen running
    _stop(pid)
    assert supervisor.stopped(KEY) is True
    _look(stopped, t0 + CHECK, t0 + LIMIT - 1)
    assert stopped.killed == 0 and _pid(supervisor) == pid
    stopped.check(now=t0 + LIMIT)
    assert stopped.killed == 1
    await wait_until(lambda: supervisor.replicas()[KEY].pid not in (None, pid), 10)  # restarted
    stopped.check(now=t0 + LIMIT + CHECK)  # the new process is counted from scratch
    assert stopped.killed == 1


async def test_a_worker_that_runs_again_in_time_is_left(
    stoppable: tuple[Supervisor, StoppedWorkers],
) -> None:
    supervisor, stopped = stoppable
    pid = _pid(supervisor)
    t0 = time.time()
    stopped.check(now=t0)
    _stop(pid)
    _look(stopped, t0 + CHECK, t0 + LIMIT - 1)
    os.kill(pid, signal.SIGCONT)  # a debugger let it go
    wait_until_blocking(lambda: supervisor.stopped(KEY) is False, 10)
    stopped.check(now=t0 + LIMIT)
    _stop(pid)  # and holds it again: the count starts from when it was last seen running
    _look(stopped, t0 + LIMIT + CHECK, t0 + 2 * LIMIT - 1)
    assert stopped.killed == 0 and _pid(supervisor) == pid
    stopped.check(now=t0 + 2 * LIMIT)
    assert stopped.killed == 1


async def test_a_look_that_comes_late_starts_the_counts_again(
    stoppable: tuple[Supervisor, StoppedWorkers],
) -> None:
    """This process was held itself (a suspended laptop, its own SIGSTOP): how long the worker
    was stopped meanwhile is not known, so nobody is killed for it."""
    supervisor, stopped = stoppable
    t0 = time.time()
    stopped.check(now=t0)
    _stop(_pid(supervisor))
    stopped.check(now=t0 + 2 * LIMIT)  # the first look in a long time
    _look(stopped, t0 + 2 * LIMIT + CHECK, t0 + 3 * LIMIT - 1)
    assert stopped.killed == 0
    stopped.check(now=t0 + 3 * LIMIT)
    assert stopped.killed == 1


async def test_the_state_of_a_process_that_is_gone_is_not_known(
    stoppable: tuple[Supervisor, StoppedWorkers],
) -> None:
    supervisor, _ = stoppable
    await supervisor.stop_replica(KEY, grace=0.5)
    assert supervisor.stopped(KEY) is None
