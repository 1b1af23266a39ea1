"""`llamactl worker`'s workers (RemoteWorkers, on a real Redis) stopped whole (SIGSTOP, a
debugger): there is no control plane on their host to hear them fall silent, so their own
supervisor reads that their process is stopped and, past the same limit as `serve`'s silence
kill, kills it and starts it again. A worker still stopped when `llamactl worker` ends is woken
to stop in order, not waited on for the whole stop grace and killed.

Before: the stopped worker stayed stopped for good (its service one worker short on that host)
and the end of `llamactl worker` waited out its stop grace, then killed it."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path

import pytest

from llamactl.server.config import load_deployment_text
from llamactl.server.deployment import silent_workers
from llamactl.server.deployment.remote_workers import RemoteWorkers
from tests.e2e.waiting import wait_until
from tests.llamactl.serving import alive
from tests.postgres import PostgresSchema
from tests.server.mq.conftest import REDIS_URL

APP = "def a(message: str = '') -> str:\n    return message\n"


async def test_a_stopped_remote_worker_is_killed_past_the_limit_and_one_still_stopped_at_the_end_stops(
    tmp_path: Path,
    backends: tuple[PostgresSchema, str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(silent_workers, "CHECK_EVERY", 0.2)  # a limit of lease + 1 s, looked at often
    monkeypatch.setattr(silent_workers, "_BEYOND_WATCHDOG", 1.0)
    _, prefix = backends
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "app.py").write_text(APP)
    config = load_deployment_text(
        f"name: far\nmessage-queue: {{type: redis, url: '{REDIS_URL}', prefix: '{prefix}', lease: 1}}\n"
        "services:\n  a: {source: {type: local, location: src}, path: 'app:a'}\n",
        base_path=tmp_path,
    )
    events: list[str] = []
    workers = RemoteWorkers(config, {"a": 1}, on_event=events.append, stop_grace=30)
    await workers.start()
    try:
        await asyncio.wait_for(workers.wait_ready(), 60)
        [(key, first)] = workers.pids().items()
        with caplog.at_level(logging.WARNING, logger="llamactl.server.deployment.silent_workers"):
            os.kill(first, signal.SIGSTOP)
            await wait_until(lambda: not alive(first), 30)  # killed
            await wait_until(lambda: sum(" is up: " in e for e in events) == 2, 60)  # and up again
        assert f"worker {key} (pid {first}) has been stopped for " in caplog.text
        second = workers.pids()[key]
        os.kill(second, signal.SIGSTOP)
    finally:
        caplog.clear()
        await workers.close()
    assert "did not stop within" not in caplog.text  # it stopped in order: not killed at the grace
    assert not alive(second)
