"""After a switch of deployment (``d``), nothing read for the previous deployment reaches the views:
not its counters and services fetched just before the switch, nor a batch of its changes still
waiting to be shown."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from textual.pilot import Pilot

from llamactl.client import AsyncClient
from llamactl.server.types import ChangeEvent
from llamactl.tui import feed as feed_module
from llamactl.tui.app import DashboardApp
from llamactl.tui.config import DashboardConfig
from llamactl.tui.services.table import ServicesTable
from llamactl.tui.tasks.table import TasksTable
from tests.tui.conftest import until, workers_done
from tests.tui.fake_api import NOW, T0

OLD_TASK = "000000a1-7a1e-4c2b-9d3f-0000000000a1"
SERVICES = {"a": "alpha", "b": "beta"}


def _service(service_id: str) -> dict[str, Any]:
    return {"service_id": service_id, "name": service_id, "replicas": []}


class _Feed(httpx.AsyncByteStream):
    def __init__(self, frames: bytes) -> None:
        self._frames = frames

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self._frames
        await asyncio.Event().wait()


class TwoDeployments:
    """Deployments ``a`` and ``b``; ``a``'s feed says at once that OLD_TASK runs. With ``hold``,
    ``a``'s state after the first one is answered only once ``release`` is set."""

    def __init__(self, *, hold: bool = False) -> None:
        self.hold = hold
        self.release = asyncio.Event()
        self.state_calls = {"a": 0, "b": 0}

    async def handle(self, request: httpx.Request) -> httpx.Response:
        parts = request.url.path.strip("/").split("/")
        if parts == ["deployments"]:
            return httpx.Response(200, json=[{"name": "a"}, {"name": "b"}])
        name, what = parts[1], parts[2]
        if what == "state":
            self.state_calls[name] += 1
            if name == "a" and self.hold and self.state_calls[name] > 1:
                await self.release.wait()
            body = {
                "deployment": name,
                "services": [_service(SERVICES[name])],
                "tasks": {"running": 1 if name == "a" else 0},
                "service_tasks": {SERVICES[name]: {"running": 1 if name == "a" else 0}},
                "changes_seq": 0,
            }
            return httpx.Response(200, json=body)
        if what in ("tasks", "sessions"):
            return httpx.Response(200, json=[])
        if what == "services":
            return httpx.Response(200, json=[_service(SERVICES[name])])
        if what == "changes":
            frames = b"retry: 1000\n\n"
            if name == "a":
                change = {
                    "kind": "task.status",
                    "deployment": "a",
                    "seq": 0,
                    "at": T0,
                    "data": {"task_id": OLD_TASK, "session_id": "s", "status": "running"},
                }
                frames += f"id: 0\nevent: task.status\ndata: {json.dumps(change)}\n\n".encode()
            return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=_Feed(frames))
        return httpx.Response(404, json={"detail": "no route"})


def _app(server: TwoDeployments, **config: Any) -> DashboardApp:
    client = AsyncClient("http://two.invalid:4501", transport=httpx.MockTransport(server.handle))
    return DashboardApp(DashboardConfig(deployment="a", **config), clock=lambda: NOW, client=client)


async def _switch_to_b(pilot: Pilot[Any], app: DashboardApp) -> None:
    app.screen.switch_to("b")  # type: ignore[attr-defined]
    await until(pilot, lambda: app.model.services.ids() == ["beta"], "b's snapshot")
    assert OLD_TASK not in app.model.tasks


async def test_counters_and_services_fetched_for_the_previous_deployment_are_not_shown() -> None:
    server = TwoDeployments(hold=True)
    app = _app(server, stats_interval=0.01)
    async with app.run_test(size=(160, 40)) as pilot:
        await until(pilot, lambda: server.state_calls["a"] >= 2, "a's counters fetched after its change")
        await _switch_to_b(pilot, app)
        server.release.set()
        await workers_done(pilot, "stats", "the fetch of a's counters to end")
        await pilot.pause(0.1)
        assert app.model.services.ids() == ["beta"]
        assert app.model.counts["running"] == 0
        services = app.screen.query_one(ServicesTable)
        await until(pilot, lambda: services.row_count > 0, "the services drawn")
        assert services.keys == ["beta"]


async def test_a_batch_of_the_previous_deployments_changes_is_not_shown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    flush_after = 0.5
    monkeypatch.setattr(feed_module, "QUIET_FLUSH", flush_after)
    added: list[float] = []
    add = feed_module.Batcher.add

    def noted_add(self: feed_module.Batcher, item: ChangeEvent) -> None:
        add(self, item)
        added.append(time.monotonic())

    monkeypatch.setattr(feed_module.Batcher, "add", noted_add)
    server = TwoDeployments()
    app = _app(server)
    async with app.run_test(size=(160, 40)) as pilot:
        await until(pilot, lambda: bool(added), "a's change read, waiting in a batch")
        await _switch_to_b(pilot, app)
        table = app.screen.query_one(TasksTable)
        deadline = added[0] + flush_after + 0.5
        while time.monotonic() < deadline and OLD_TASK not in app.model.tasks:
            await pilot.pause(0.05)
        assert OLD_TASK not in app.model.tasks, "a task of deployment a shown for deployment b"
        assert OLD_TASK not in table.keys
