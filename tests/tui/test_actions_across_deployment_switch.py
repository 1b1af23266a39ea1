"""An action started on one deployment whose answer comes after the user switched to another (``d``)
does not land in the new deployment's views: the task it ran, the session it made or the task it
cancelled belong to the deployment it was asked of."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
from textual.message import Message
from textual.notifications import Notify
from textual.pilot import Pilot

from llamactl.client import AsyncClient
from llamactl.tui.app import DashboardApp
from llamactl.tui.config import DashboardConfig
from llamactl.tui.dialogs.run_task import RunTaskDialog
from llamactl.tui.feed import Feed
from tests.tui.conftest import until, workers_done
from tests.tui.fake_api import NOW, T0

NEW_TASK = "000000a2-7a1e-4c2b-9d3f-0000000000a2"
NEW_SESSION = "5e55a2a2-0000-4000-8000-000000000000"
SERVICES = {"a": "alpha", "b": "beta"}


class _Silent(httpx.AsyncByteStream):
    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b"retry: 1000\n\n"
        await asyncio.Event().wait()


class HeldActions:
    """Deployments ``a`` and ``b`` with nothing in them; ``a`` answers creating a task or a session
    only once ``release`` is set."""

    def __init__(self) -> None:
        self.asked = asyncio.Event()
        self.release = asyncio.Event()

    async def handle(self, request: httpx.Request) -> httpx.Response:
        parts = request.url.path.strip("/").split("/")
        if parts == ["deployments"]:
            return httpx.Response(200, json=[{"name": "a"}, {"name": "b"}])
        name, what, rest = parts[1], parts[2], parts[3:]
        service = {"service_id": SERVICES[name], "name": SERVICES[name], "replicas": []}
        if what == "state":
            body = {"deployment": name, "services": [service], "tasks": {}, "changes_seq": 0}
            return httpx.Response(200, json=body)
        if what == "services":
            return httpx.Response(200, json=[service])
        if what == "changes":
            return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=_Silent())
        if (
            request.method == "POST"
            and name == "a"
            and (what, rest) in (("tasks", ["create"]), ("sessions", []))
        ):
            self.asked.set()
            await self.release.wait()
            if what == "sessions":
                return httpx.Response(200, json={"session_id": NEW_SESSION, "task_ids": [], "state": {}})
            return httpx.Response(200, json={"task_id": NEW_TASK, "session_id": NEW_SESSION, "input": "{}"})
        if what == "tasks" and rest == [NEW_TASK] and name == "a":
            return httpx.Response(200, json=_record())
        if what in ("tasks", "sessions") and not rest:
            return httpx.Response(200, json=[])
        return httpx.Response(404, json={"detail": f"no {request.url.path} on {name}"})


def _record() -> dict[str, Any]:
    return {
        "task_id": NEW_TASK,
        "deployment": "a",
        "service_id": "alpha",
        "session_id": NEW_SESSION,
        "input": "{}",
        "status": "queued",
        "attempts": 0,
        "created_at": T0,
    }


async def _started_then_switched(
    pilot: Pilot[Any], app: DashboardApp, server: HeldActions, start: Callable[[], Awaitable[None]]
) -> None:
    """``start`` an action on deployment ``a``; once the server is asked, switch to ``b``, then let
    ``a`` answer."""
    feed = app.screen.query_one(Feed)
    await until(pilot, lambda: feed.connected and app.model.services.ids() == ["alpha"], "a's snapshot")
    await start()
    await until(pilot, server.asked.is_set, "the server asked")
    app.screen.switch_to("b")  # type: ignore[attr-defined]
    await until(pilot, lambda: feed.connected and app.model.services.ids() == ["beta"], "b's snapshot")
    server.release.set()
    await workers_done(pilot, "actions", "the action to end")
    await pilot.pause(0.1)


def _app(server: HeldActions) -> DashboardApp:
    client = AsyncClient("http://two.invalid:4501", transport=httpx.MockTransport(server.handle))
    return DashboardApp(DashboardConfig(deployment="a"), clock=lambda: NOW, client=client)


async def test_a_task_run_on_the_previous_deployment_is_not_shown_as_the_new_ones() -> None:
    server = HeldActions()
    app = _app(server)
    notices: list[str] = []

    def hook(message: Message) -> None:
        if isinstance(message, Notify):
            notices.append(message.notification.message)

    async with app.run_test(size=(160, 40), notifications=True, message_hook=hook) as pilot:

        async def run() -> None:
            await pilot.press("r")
            await until(pilot, lambda: isinstance(app.screen, RunTaskDialog), "the run form")
            await pilot.press("enter")

        await _started_then_switched(pilot, app, server, run)
        assert NEW_TASK not in app.model.tasks, "a task of deployment a shown among b's"
        assert app.shown_task is None, "a task of deployment a put on show for b"
        assert not [n for n in notices if "stopped" in n], notices
        await until(pilot, lambda: [n for n in notices if NEW_TASK in n and "'a'" in n], "the user told")


async def test_a_session_made_on_the_previous_deployment_is_not_listed_as_the_new_ones() -> None:
    server = HeldActions()
    app = _app(server)
    async with app.run_test(size=(160, 40)) as pilot:
        await _started_then_switched(pilot, app, server, lambda: pilot.press("n"))
        assert NEW_SESSION not in app.model.sessions, "a session of deployment a listed among b's"
        assert app.screen.tasks_region.sessions.selected is None  # type: ignore[attr-defined]
