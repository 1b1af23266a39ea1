"""The disk under the deployment's state fills up for a few seconds (a real tmpfs under
`.llamactl/`, holding the state store and the broker's journal): new tasks and runs get a clear
503 and nothing half-accepted, the task that finishes meanwhile is recorded once space is back, and
everything goes on after."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.faults import SmallDisk, small_disk
from tests.server.apiserver.conftest import start_server

from .apps import write_fault_app
from .test_server_restart import final_statuses

D = "/deployments/faults"


@pytest.fixture
async def full_disk_app(tmp_path: Path) -> AsyncIterator[tuple[str, SmallDisk]]:
    app = write_fault_app(tmp_path / "app", {"work": {"path": "funcs:work", "max-concurrency": 4}})
    with small_disk(app.folder / ".llamactl", "16m") as disk:
        stop = asyncio.Event()
        url, serving = await start_server(stop, deployment_files=[app.file])
        try:
            yield url, disk
        finally:
            disk.free()
            stop.set()
            await asyncio.wait_for(serving, 60)


def body(key: str, seconds: float = 0.0, session: str | None = None) -> dict[str, object]:
    payload = {"input": json.dumps({"key": key, "seconds": seconds}), "service_id": "work"}
    return {**payload, **({"session_id": session} if session else {})}


async def test_a_full_disk_refuses_new_tasks_clearly_and_loses_nothing(
    full_disk_app: tuple[str, SmallDisk],
) -> None:
    url, disk = full_disk_app
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        assert (await client.post(f"{D}/tasks/run", json=body("before"))).json() == "done before"
        session = (await client.post(f"{D}/sessions/create")).json()["session_id"]
        running = (await client.post(f"{D}/tasks/create", json=body("during", 1.5, session))).json()[
            "task_id"
        ]
        queued = (await client.post(f"{D}/tasks/create", json=body("after", 0.0, session))).json()["task_id"]
        await asyncio.sleep(0.3)
        filled = disk.fill()
        # New tasks fit in the room a WAL that started over keeps in its file, until it is used
        # up (tests/faults.py, use_up): every one accepted must run, none may be half-accepted.
        accepted: list[str] = []
        refused = await client.post(f"{D}/tasks/create", json=body("full-0"))
        while refused.is_success and len(accepted) < 400:
            accepted.append(refused.json()["task_id"])
            refused = await client.post(f"{D}/tasks/create", json=body(f"full-{len(accepted)}"))
        print(
            f"injected: filled the state disk ({filled} bytes); {len(accepted)} new tasks fit in the WAL, "
            f"then one got {refused.status_code}: {refused.json()['detail']}"
        )
        assert refused.status_code == 503
        assert "full" in refused.json()["detail"] and "try again" in refused.json()["detail"]
        assert refused.headers["retry-after"] == "1"
        status = (await client.get("/status/")).json()
        assert status["status"] == "Unhealthy", status
        assert "state store sqlite:///" in status["status_message"]
        assert (
            "refusing writes for" in status["status_message"]
            and "its disk is full" in status["status_message"]
        )
        # A run goes to its worker before it is stored. The WAL checkpointer's thread may let the
        # WAL start over after the refusal above (seen in CI), and runs then fit in its room like
        # the creates did: each one answered must be stored and done; the first refused must be
        # taken back, not stored. A run stored whose result finds the disk full answers only
        # once there is room again (seen under load): it must then be done.
        ran: list[str] = []
        waiting: dict[str, asyncio.Future[httpx.Response]] = {}
        run: httpx.Response | None = None
        while len(ran) < 400:
            key = f"full-run-{len(ran)}"
            call = asyncio.ensure_future(client.post(f"{D}/tasks/run", json=body(key)))
            if not (await asyncio.wait({call}, timeout=5))[0]:
                waiting[key] = call
            else:
                run = call.result()
                if not run.is_success:
                    break
                assert run.json() == f"done {key}", run.text
            ran.append(key)
        print(
            f"then {len(ran)} runs fit ({len(waiting)} waiting for room) before one got {run and run.status_code}"
        )
        assert run is not None and run.status_code == 503 and "full" in run.json()["detail"], run
        await asyncio.sleep(2.5)  # the running task ends while nothing can be written
        disk.free()
        for key, call in waiting.items():
            assert (await call).json() == f"done {key}"
        for task_id in (running, queued, *accepted):
            result = await client.get(f"{D}/tasks/{task_id}/results", params={"timeout": 60})
            assert result.json()["data"]["status"] == "completed", result.text
        assert (await client.post(f"{D}/tasks/run", json=body("later"))).json() == "done later"
        assert (await client.get("/status/")).json()["status"] == "Healthy"
        listed = (await client.get(f"{D}/tasks", params={"limit": 1000})).json()
        inputs = sorted(json.loads(t["input"])["key"] for t in listed)
        print(f"counted: {len(inputs)} tasks stored")
        fillers = [f"full-{n}" for n in range(len(accepted))]
        assert inputs == sorted(
            ["after", "before", "during", "later", *fillers, *ran]
        )  # nothing half-accepted
        finals = await final_statuses(client)
        assert all(finals[t["task_id"]] == 1 for t in listed)
