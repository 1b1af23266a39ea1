"""The line to Redis (the deployment's message queue) is cut for a while and restored (a TCP proxy
that drops every connection and refuses new ones: the shared Redis server may not be stopped).

Meanwhile the server says so (`/status/` Unhealthy naming the deployment's queue, `/state`
health, `/metrics`), keeps its replicas (their heartbeats cannot come through: silence says
nothing of them), accepts a task at once (stored; it is handed out once the queue answers), and
`llamactl run` says why its task waits; the task accepted meanwhile runs once the line is back.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from llamactl.server.control_plane import ControlPlane
from llamactl.server.types import ChangeEvent, ReplicaState, TaskDefinition, TaskStatus
from tests.e2e.waiting import eventually, wait_until
from tests.llamactl.serving import Lines, Server, llamactl, reaped, write_app
from tests.postgres import PostgresSchema
from tests.server.mq.conftest import REDIS_URL, delete_keys
from tests.server.mq.tcp_proxy import ProxyThread, TcpProxy

from .conftest import Start

REDIS = urlsplit(REDIS_URL)
DB = REDIS.path.strip("/") or "0"


async def _changes(cp: ControlPlane) -> AsyncIterator[ChangeEvent]:
    seq = 0
    while batch := await cp.changes.read(seq, limit=5000):
        for change in batch:
            yield change
        seq = batch[-1].seq + 1


@pytest.fixture
async def redis_line(backends: tuple[PostgresSchema, str]) -> AsyncIterator[tuple[TcpProxy, str]]:
    """A line to the shared Redis that the test cuts (``stop()``) and restores (``start()``), and
    a fresh key prefix."""
    _, prefix = backends
    proxy = TcpProxy(REDIS.hostname or "127.0.0.1", REDIS.port or 6379)
    await proxy.start()
    try:
        yield proxy, prefix
    finally:
        await proxy.stop()


def _queue(port: int, prefix: str) -> dict[str, object]:
    return {"type": "redis", "url": f"redis://127.0.0.1:{port}/{DB}", "prefix": prefix}


async def test_replicas_are_kept_and_tasks_wait_while_the_queue_is_unreachable(
    start_app: Start, redis_line: tuple[TcpProxy, str]
) -> None:
    proxy, prefix = redis_line
    # Reports every 1 s: a replica silent for 3 s would be taken for crashed.
    deployment, _ = await start_app(
        {"work": {"path": "funcs:work", "replicas": 2}}, message_queue=_queue(proxy.port, prefix)
    )
    cp = deployment.control_plane
    assert deployment.health()["message_queue"] == {
        "type": "redis",
        "reachable": True,
        "where": None,
        "unreachable_since": None,
        "error": None,
        "state": None,
    }
    await proxy.stop()
    await wait_until(lambda: deployment.queue_outage is not None, 10)
    # Accepted (stored) at once, not after the 10 s publish timeout: the queue is known down.
    async with asyncio.timeout(5):
        task = await cp.create_task(
            TaskDefinition(service_id="work", input='{"key": "during", "seconds": 0}')
        )
    outage = deployment.queue_outage
    assert outage is not None
    # Three report intervals and more without a heartbeat getting through.
    await wait_until(lambda: time.time() - outage.since > 5, 10)
    states = {r.replica_id: r.state for s in deployment.services() for r in s.replicas}
    assert states == {"work#1": ReplicaState.READY, "work#2": ReplicaState.READY}
    health = deployment.health()["message_queue"]
    assert isinstance(health, dict) and health["reachable"] is False and health["error"]
    assert (await cp.get_task(task.task_id)).status is TaskStatus.QUEUED
    await proxy.start()
    done = await cp.wait_for_task(task.task_id, timeout=60)
    assert done.status is TaskStatus.COMPLETED and done.result == "done during"
    assert deployment.queue_outage is None
    states = {r.replica_id: r.state for s in deployment.services() for r in s.replicas}
    assert set(states.values()) == {ReplicaState.READY}
    # The change feed (in the store, which stayed up) says when the outage began and ended.
    kinds: list[tuple[str, dict[str, object]]] = []

    async def outage_reported() -> bool:
        await cp.changes.flushed()
        kinds[:] = [(c.kind, c.data) async for c in _changes(cp) if c.kind.startswith("queue.")]
        return [k for k, _ in kinds] == ["queue.unreachable", "queue.reachable"]

    await eventually(outage_reported, 10)
    (_, began), (_, ended) = kinds
    assert began["where"] == outage.where and began["since"] == outage.since
    assert ended["where"] == outage.where and float(ended["unreachable_for"]) > 5  # type: ignore[arg-type]


async def test_a_task_running_through_an_outage_runs_once(
    start_app: Start, redis_line: tuple[TcpProxy, str], capfd: pytest.CaptureFixture[str]
) -> None:
    """No client's heartbeat reaches Redis for longer than the liveness window (3 s): once it is
    back, the first heartbeat must not take the others for dead and hand their tasks out again."""
    proxy, prefix = redis_line
    deployment, app = await start_app(
        {"work": {"path": "funcs:work", "replicas": 2}}, message_queue=_queue(proxy.port, prefix)
    )
    cp = deployment.control_plane
    task = await cp.create_task(TaskDefinition(service_id="work", input='{"key": "a", "seconds": 8}'))
    await wait_until(lambda: app.runs_of("a") == 1, 30)
    await proxy.stop()
    await wait_until(lambda: deployment.queue_outage is not None, 10)
    outage = deployment.queue_outage
    assert outage is not None
    await wait_until(lambda: time.time() - outage.since > 4.5, 10)  # past the 3 s window
    await proxy.start()
    done = await cp.wait_for_task(task.task_id, timeout=60)
    assert (done.status, done.attempts) == (TaskStatus.COMPLETED, 1)
    assert app.runs_of("a") == 1
    assert "declared dead" not in capfd.readouterr().err  # the workers' lines, and the server's


async def test_status_and_run_say_that_the_queue_is_unreachable(
    tmp_path: Path, backends: tuple[PostgresSchema, str]
) -> None:
    pg, prefix = backends
    # A real `serve` and `llamactl run`, waited on from a thread (the proxy has one of its own).
    await asyncio.to_thread(_status_and_run, tmp_path, pg, prefix)


def _status_and_run(tmp_path: Path, pg: PostgresSchema, prefix: str) -> None:
    with ProxyThread(REDIS.hostname or "127.0.0.1", REDIS.port or 6379) as proxy:
        file = write_app(tmp_path / "app", "cut", {"func": "funcs:greet"})
        queue = _queue(proxy.port, prefix)
        file.write_text(
            file.read_text().replace(
                "services:\n",
                f"control-plane:\n  state_store_uri: {pg.uri}\nmessage-queue: {json.dumps(queue)}\nservices:\n",
                1,
            )
        )
        server = Server(file)
        try:
            status = httpx.get(f"{server.url}/status/").json()
            assert status["status"] == "Healthy"
            proxy.stop()
            deadline = time.monotonic() + 20
            while (status := httpx.get(f"{server.url}/status/").json())["status"] == "Healthy":
                assert time.monotonic() < deadline, "the server never said the queue is unreachable"
                time.sleep(0.1)
            assert status["status"] == "Unhealthy"
            assert status["status_message"].startswith(
                f"deployment 'cut': message queue redis://127.0.0.1:{proxy.port}/{DB} unreachable for "
            ), status
            metrics = httpx.get(f"{server.url}/metrics").text
            assert 'llamactl_message_queue_reachable{deployment="cut"} 0' in metrics
            with reaped(llamactl("--server", server.url, "run", "-s", "func", "-a", "name", "Ada")) as run:
                assert run.stderr is not None and run.stdout is not None
                said = Lines(run.stderr).wait_for(lambda line: "unreachable" in line, 20)
                assert said.startswith(f"The server says: message queue redis://127.0.0.1:{proxy.port}/")
                assert said.endswith("Waiting until it is back (Ctrl-C stops waiting)")
                assert run.poll() is None  # still waiting
                proxy.start()
                assert run.wait(60) == 0
                assert run.stdout.read().strip() == "hello Ada"
            assert httpx.get(f"{server.url}/status/").json()["status"] == "Healthy"
        finally:
            proxy.start()  # the server's stop needs the queue to say goodbye promptly
            assert server.stop() == 0


async def test_tasks_a_redis_lost_in_an_outage_are_handed_out_again(
    start_app: Start, redis_line: tuple[TcpProxy, str]
) -> None:
    proxy, prefix = redis_line
    deployment, app = await start_app(
        {"work": {"path": "funcs:work", "max-concurrency": 1}}, message_queue=_queue(proxy.port, prefix)
    )
    cp = deployment.control_plane
    running = await cp.create_task(TaskDefinition(service_id="work", input='{"key": "a", "seconds": 3}'))
    waiting = await cp.create_task(TaskDefinition(service_id="work", input='{"key": "b", "seconds": 0}'))
    await wait_until(lambda: app.runs_of("a") == 1, 30)
    await proxy.stop()
    # Redis restarts without its data (no AOF): everything under the deployment's prefix is gone,
    # the waiting task's message with it.
    await delete_keys(REDIS_URL, prefix)
    print("injected: Redis cut, and its data for the deployment dropped")
    await wait_until(lambda: deployment.queue_outage is not None, 10)
    await proxy.start()
    done = [await cp.wait_for_task(t.task_id, timeout=60) for t in (running, waiting)]
    assert [d.status for d in done] == [TaskStatus.COMPLETED, TaskStatus.COMPLETED]
    assert app.runs_of("b") == 1


async def test_tasks_a_redis_lost_with_no_outage_are_handed_out_again(
    start_app: Start, redis_line: tuple[TcpProxy, str], caplog: pytest.LogCaptureFixture
) -> None:
    """A FLUSHALL (or a Redis restarted empty between two heartbeats) drops what the queue held
    while every connection stays up: no outage to go by, only Redis no longer knowing its clients."""
    proxy, prefix = redis_line
    deployment, app = await start_app(
        {"work": {"path": "funcs:work", "max-concurrency": 1}}, message_queue=_queue(proxy.port, prefix)
    )
    cp = deployment.control_plane
    running = await cp.create_task(TaskDefinition(service_id="work", input='{"key": "a", "seconds": 3}'))
    waiting = await cp.create_task(TaskDefinition(service_id="work", input='{"key": "b", "seconds": 0}'))
    await wait_until(lambda: app.runs_of("a") == 1, 30)
    with caplog.at_level("WARNING"):
        await delete_keys(REDIS_URL, prefix)  # the shared Redis: FLUSHALL of this test's keys only
        print("injected: the deployment's data dropped from Redis, every connection up")
        done = [await cp.wait_for_task(t.task_id, timeout=60) for t in (running, waiting)]
    assert [d.status for d in done] == [TaskStatus.COMPLETED, TaskStatus.COMPLETED]
    assert app.runs_of("b") == 1
    assert deployment.queue_outage is None
    said = [r.getMessage() for r in caplog.records]
    assert any("lost what it held" in line for line in said), said
    assert not any("declared dead" in line for line in said), said


async def test_replicas_stop_on_sigterm_while_the_queue_is_unreachable(
    start_app: Start, redis_line: tuple[TcpProxy, str], caplog: pytest.LogCaptureFixture
) -> None:
    """A stop (a `serve` ended by Ctrl-C) while Redis does not answer: each replica exits on its
    SIGTERM, not after the stop grace by a SIGKILL (its goodbye to the control plane cannot go)."""
    proxy, prefix = redis_line
    deployment, _ = await start_app(
        {"work": {"path": "funcs:work", "replicas": 2}}, message_queue=_queue(proxy.port, prefix)
    )
    await proxy.stop()
    await wait_until(lambda: deployment.queue_outage is not None, 10)
    with caplog.at_level("WARNING"):
        await deployment.close()
    said = [r.getMessage() for r in caplog.records]
    assert not any("did not stop within" in line for line in said), said
