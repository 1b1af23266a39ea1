"""`rm -rf .llamactl` (or `git clean -fdx`) under a running `llamactl serve`.

Before: the server went on from the unlinked files, and the next `serve` found empty ones: every
task and session, and the tasks run after the deletion, were gone."""

from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path

from llamactl.client import Client
from tests.llamactl.serving import Server, write_app

WRITTEN_BACK = "was deleted while the server ran: written back from the open database"


def _written_back(server: Server) -> int:
    return sum(WRITTEN_BACK in line for line in server.stderr.so_far())


def test_serve_writes_its_deleted_state_back_and_a_restart_finds_every_task(tmp_path: Path) -> None:
    file = write_app(tmp_path / "app", "wiped", {"greet": "funcs:greet"})
    state = tmp_path / "app" / ".llamactl"
    ids = {name: str(uuid.uuid4()) for name in ("before", "meanwhile", "after", "last")}
    server = Server(file)
    try:
        with Client(server.url) as client:
            tasks = client.deployment("wiped").tasks
            assert tasks.run({"name": "before"}, task_id=ids["before"]) == "hello before"
            shutil.rmtree(state)
            assert tasks.run({"name": "meanwhile"}, task_id=ids["meanwhile"]) == "hello meanwhile"
            deadline = time.monotonic() + 30
            while _written_back(server) < 2:  # the state store and the message journal
                assert time.monotonic() < deadline, server.stderr.so_far()
                time.sleep(0.05)
            assert tasks.run({"name": "after"}, task_id=ids["after"]) == "hello after"
            shutil.rmtree(state)  # and once more, just before a stop
            assert tasks.run({"name": "last"}, task_id=ids["last"]) == "hello last"
    finally:
        assert server.stop() == 0
    assert _written_back(server) == 4, server.stderr.so_far()
    again = Server(file)
    try:
        with Client(again.url) as client:
            tasks = client.deployment("wiped").tasks
            for name, task_id in ids.items():
                done = tasks.result(task_id, timeout=10)
                assert done is not None and done.result == f"hello {name}"
    finally:
        assert again.stop() == 0
