"""``python -m llamactl.server.services`` as a real process against the embedded ZeroMQ broker."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from llamactl.server.mq import topics
from llamactl.server.mq.base import MessageQueue
from llamactl.server.mq.factory import connect_queue
from llamactl.server.mq.zeromq import ZeroMQBroker, unix_listener
from llamactl.server.protocol import TaskMessage, WorkerMessage, WorkerMessageKind
from llamactl.server.services.process import EXIT_LOAD_FAILED
from llamactl.server.services.spec import WORKER_SPEC_ENV, WorkerSpec

from .conftest import WriteModule
from .usercode import FLOWS

REPO = Path(__file__).resolve().parents[3]
DEADLINE = 20.0
K = WorkerMessageKind

WAITER = """
import asyncio
from pathlib import Path


async def wait_for_file(path: str):
    yield "waiting"
    while not Path(path).exists():
        await asyncio.sleep(0.02)
    yield "done"
"""


class ControlReader:
    """Consumes (and acks) the control topic in the background; waits for conditions on it."""

    def __init__(self, queue: MessageQueue, deployment: str) -> None:
        self.messages: list[WorkerMessage] = []
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._read(queue, topics.control_topic(deployment)))

    async def _read(self, queue: MessageQueue, topic: str) -> None:
        async for delivery in queue.consume(topic, prefetch=64, lease=30):
            self.messages.append(WorkerMessage.model_validate_json(delivery.message.payload))
            await delivery.ack()
            self._changed.set()

    def kinds(self, task_id: str | None = None) -> list[str]:
        return [m.kind.value for m in self.messages if task_id is None or m.task_id == task_id]

    async def wait_for(self, predicate: Callable[[], bool], deadline: float = DEADLINE) -> None:
        async with asyncio.timeout(deadline):
            while not predicate():
                if self._task.done():
                    self._task.result()
                self._changed.clear()
                await self._changed.wait()

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.wait({self._task})


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[ZeroMQBroker]:
    b = ZeroMQBroker(journal_path=tmp_path / "journal")
    await b.start()
    yield b
    await b.close()


@pytest.fixture
async def queue(broker: ZeroMQBroker) -> AsyncIterator[MessageQueue]:
    async with connect_queue(broker.client_config) as q:
        yield q


@pytest.fixture
async def control(queue: MessageQueue) -> AsyncIterator[ControlReader]:
    reader = ControlReader(queue, "dep")
    yield reader
    await reader.close()


@pytest.fixture
def spawn(
    broker: ZeroMQBroker, source_dir: Path, write_module: WriteModule, tmp_path: Path
) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    write_module("flows.py", FLOWS)
    write_module("waiter.py", WAITER)
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(import_path: str, **changes: Any) -> subprocess.Popen[bytes]:
        spec = WorkerSpec(
            deployment="dep",
            service_id="svc",
            replica_id=f"svc-{len(procs)}",
            source_dir=str(source_dir),
            import_path=import_path,
            mq=broker.client_config,
            **{"parent_pid": os.getpid(), **changes},
        )
        log = (tmp_path / f"worker-{len(procs)}.log").open("wb")
        env = {**os.environ, WORKER_SPEC_ENV: spec.to_env()}
        proc = subprocess.Popen(
            [sys.executable, "-m", "llamactl.server.services"], cwd=REPO, env=env, stderr=log
        )
        log.close()
        procs.append(proc)
        return proc

    yield spawn
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


async def exit_code(proc: subprocess.Popen[bytes], deadline: float = DEADLINE) -> int:
    return await asyncio.to_thread(proc.wait, deadline)


async def submit(queue: MessageQueue, task_id: str, **fields: Any) -> None:
    task = TaskMessage(task_id=task_id, session_id="s1", service_id="svc", deployment="dep", **fields)
    await queue.publish(
        topics.service_topic("dep", "svc"),
        task.model_dump_json().encode(),
        msg_id=f"{task_id}:start",
        key="s1",
    )


async def test_worker_process_runs_a_workflow(
    spawn: Any, queue: MessageQueue, control: ControlReader
) -> None:
    proc = spawn("flows:counter")
    await control.wait_for(lambda: "replica.up" in control.kinds())
    await submit(queue, "t1", input={"who": "ada"})
    await control.wait_for(lambda: "task.completed" in control.kinds("t1"))
    kinds = control.kinds("t1")
    assert kinds[0] == "task.started" and kinds[-1] == "task.completed"
    assert set(kinds[1:-1]) == {"task.event"}  # the step's three events, one or several a report
    reports = [m for m in control.messages if m.task_id == "t1" and m.kind.value == "task.event"]
    assert sum(1 if m.event is not None else len(m.events) for m in reports) == 3
    final = control.messages[-1]
    assert [e["type"] for e in final.events] == ["StopEvent"]
    assert final.result == {"count": 1, "who": "ada"}
    assert final.pid == proc.pid
    await submit(queue, "t2", context=final.context)
    await control.wait_for(lambda: "task.completed" in control.kinds("t2"))
    assert control.messages[-1].result["count"] == 2
    proc.send_signal(signal.SIGTERM)
    assert await exit_code(proc) == 0
    await control.wait_for(lambda: "replica.stopping" in control.kinds())


async def test_sigterm_lets_the_running_task_finish(
    spawn: Any, queue: MessageQueue, control: ControlReader, tmp_path: Path
) -> None:
    proc = spawn("waiter:wait_for_file")
    await control.wait_for(lambda: "replica.up" in control.kinds())
    release = tmp_path / "release"
    await submit(queue, "t1", input={"path": str(release)})
    await control.wait_for(lambda: "task.event" in control.kinds("t1"))
    proc.send_signal(signal.SIGTERM)
    await control.wait_for(lambda: "replica.stopping" in control.kinds())
    assert proc.poll() is None, "the worker must wait for its in-flight task"
    release.touch()
    await control.wait_for(lambda: "task.completed" in control.kinds("t1"))
    assert control.messages[-1].result == "done"
    assert await exit_code(proc) == 0


async def test_bad_import_path_reports_replica_failed_and_exits_3(spawn: Any, control: ControlReader) -> None:
    proc = spawn("flows:no_such_workflow")
    await control.wait_for(lambda: "replica.failed" in control.kinds())
    [failed] = [m for m in control.messages if m.kind is K.REPLICA_FAILED]
    assert failed.error is not None and "has no attribute 'no_such_workflow'" in failed.error
    assert "counter" in failed.error
    assert await exit_code(proc) == EXIT_LOAD_FAILED
    assert "replica.up" not in control.kinds()


async def test_a_slow_import_does_not_cost_the_worker_its_line_to_the_broker(
    spawn: Any,
    queue: MessageQueue,
    control: ControlReader,
    write_module: WriteModule,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Heavy libraries take seconds to import; the broker refuses a line that stays silent for
    # HELLO_WITHIN. The worker used to connect first and then import: refused, it crashed and
    # was restarted into the same fate, and the service never came up.
    monkeypatch.setattr(unix_listener, "HELLO_WITHIN", 0.3)
    write_module(
        "heavy.py", "import time\ntime.sleep(1.0)\n\n\nasync def echo(x: str) -> str:\n    return x\n"
    )
    proc = spawn("heavy:echo")
    await control.wait_for(lambda: "replica.up" in control.kinds())
    await submit(queue, "t1", input={"x": "hi"})
    await control.wait_for(lambda: "task.completed" in control.kinds("t1"))
    assert control.messages[-1].result == "hi"
    assert proc.poll() is None


@pytest.fixture
def stand_in_parent() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


async def test_worker_exits_when_its_parent_is_gone(
    spawn: Any, control: ControlReader, tmp_path: Path, stand_in_parent: subprocess.Popen[bytes]
) -> None:
    proc = spawn("flows:counter", parent_pid=stand_in_parent.pid)
    await control.wait_for(lambda: "replica.up" in control.kinds())
    stand_in_parent.kill()
    await asyncio.to_thread(stand_in_parent.wait)  # reaped: a zombie would still answer kill(pid, 0)
    assert await exit_code(proc) == 0
    log = (tmp_path / "worker-0.log").read_text()
    assert f"parent process {stand_in_parent.pid} is gone" in log
    assert "[svc-0]" in log
