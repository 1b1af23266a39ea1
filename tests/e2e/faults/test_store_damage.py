"""The state store's file turns out damaged while the server runs (SQLite: "database disk image
is malformed"). Before, every report was retried for ever and a `tasks/run` waited its full 300 s
with no word of why; now the deployment says once what is wrong and what to do, answers its
waiters at once (503 naming the task) and takes no new task, while reads that still work go on."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.faults import damage_sqlite_index
from tests.server.apiserver.conftest import start_server

from .apps import App, write_fault_app

D = "/deployments/faults"


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[tuple[str, App]]:
    fault_app = write_fault_app(tmp_path / "app", {"work": {"path": "funcs:work"}})
    stop = asyncio.Event()
    url, serving = await start_server(stop, deployment_files=[fault_app.file])
    try:
        yield url, fault_app
    finally:
        stop.set()
        await asyncio.wait_for(serving, 60)


def body(key: str, seconds: float = 0.0) -> dict[str, object]:
    return {"input": json.dumps({"key": key, "seconds": seconds}), "service_id": "work"}


async def test_a_damaged_state_store_answers_at_once_and_says_what_to_do(
    app: tuple[str, App],
) -> None:
    url, fault_app = app
    state = fault_app.folder / ".llamactl" / "state.sqlite"
    # The server's own wait (300 s) is far above this client's: a run left waiting fails the test.
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        done = await client.post(f"{D}/tasks/create", json=body("before"))
        before = done.json()["task_id"]
        assert (await client.get(f"{D}/tasks/{before}/results", params={"timeout": 30})).status_code == 200
        waiting = asyncio.create_task(client.post(f"{D}/tasks/run", json=body("during", 1.0)))
        deadline = time.monotonic() + 20
        while not (running := (await client.get(f"{D}/tasks", params={"status": "running"})).json()):
            assert time.monotonic() < deadline, "the task did not start"
            await asyncio.sleep(0.02)
        damage_sqlite_index(state, "sqlite_autoindex_log_1", onto="kv")  # its result cannot be stored
        answer = await waiting
        assert answer.status_code == 503, answer.text
        detail = answer.json()["detail"]
        assert answer.json()["task_id"] == running[0]["task_id"]
        assert f"the SQLite state store {state} is damaged" in detail, detail
        assert "restore the file from a backup or move it aside" in detail, detail
        refused = await client.post(f"{D}/tasks/run", json=body("after"))
        assert refused.status_code == 503 and "takes no new task" in refused.json()["detail"]
        assert "Retry-After" not in refused.headers  # no retry mends it
        kept = await client.get(f"{D}/tasks/{before}")
        assert kept.status_code == 200 and kept.json()["status"] == "completed"
