"""`llamactl serve` itself held while its workers run on: Ctrl-Z in its terminal (SIGTSTP stops
the server, not its workers, which have sessions of their own), SIGSTOP, a debugger's breakpoint.

Before: when it went on, it took the time it had been held for its workers' silence: the
liveness watch declared them gone at its first look (`status`: "its worker slow#1 stopped
reporting"; past the lease plus 30 s they were killed), and the broker, when its timer came
before a holder's extension, took each running task from its worker and ran it again. Time the
server could not hear anyone says nothing of them."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from llamactl.client import Client
from llamactl.server.types import TaskStatus
from tests.e2e.waiting import wait_until_blocking
from tests.llamactl.serving import Server, write_app

LEASE = 6.0
HELD = 21.0
"""Seconds held: past the liveness window of `serve` (3 missed reports, 5 s apart) and past the
lease, by a look of the watch (5 s)."""


def test_a_held_server_keeps_its_workers_and_their_running_task(tmp_path: Path) -> None:
    file = write_app(tmp_path / "app", "held", {"slow": "funcs:slow"})
    file.write_text(file.read_text() + f"message-queue:\n  type: zeromq\n  lease: {LEASE}\n")
    server = Server(file)
    try:
        with Client(server.url) as client:
            tasks = client.deployment("held").tasks
            task = tasks.create({"seconds": HELD + 3})
            wait_until_blocking(lambda: tasks.get(task.task_id).status == TaskStatus.RUNNING, 30, "it runs")
            workers = server.note_workers()
            os.kill(server.process.pid, signal.SIGSTOP)
            try:
                time.sleep(HELD)  # the fault itself: how long the server is held
            finally:
                os.kill(server.process.pid, signal.SIGCONT)
            done = tasks.result(task.task_id, timeout=60)
            assert done is not None and done.result == "done"
            record = tasks.get(task.task_id)
            assert (record.status, record.attempts) == (TaskStatus.COMPLETED, 1), server.stderr.so_far()
            (service,) = client.deployment("held").services()
            assert service.last_error is None, service.last_error  # before: "... stopped reporting ..."
            assert [r.restarts for r in service.replicas] == [0]
            assert server.note_workers() == workers
    finally:
        assert server.stop() == 0
    assert not [line for line in server.stderr.so_far() if "taken for dead" in line]
