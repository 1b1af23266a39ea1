"""A real `llamactl serve` for the dashboard's tests, and helpers to drive the dashboard against it."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from textual.message import Message
from textual.notifications import Notify
from textual.pilot import Pilot
from textual.worker import WorkerState

from llamactl.tui.app import DashboardApp
from llamactl.tui.config import DashboardConfig
from llamactl.tui.feed import Feed
from tests.llamactl.serving import Server, write_app


@pytest.fixture(scope="session")
def tui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server running two deployments: `demo` (every test service) and `other` (echo only)."""
    folder = tmp_path_factory.mktemp("tui")
    demo = write_app(folder / "demo", "demo")
    other = write_app(folder / "other", "other", {"echo": "flows:echo_workflow"})
    server = Server(demo, other)
    try:
        yield server
    finally:
        assert server.stop() == 0, "\n".join(server.stderr.rest())


async def until(pilot: Pilot[Any], condition: Callable[[], object], what: str, timeout: float = 20.0) -> None:
    """Let the app run until ``condition()`` holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await pilot.pause(0.05)


async def workers_done(pilot: Pilot[Any], group: str, what: str) -> None:
    """Let the app run until none of its workers of ``group`` is pending or running."""
    app = pilot.app
    busy = (WorkerState.PENDING, WorkerState.RUNNING)
    await until(pilot, lambda: not [w for w in app.workers if w.group == group and w.state in busy], what)


def feed_of(app: DashboardApp) -> Feed:
    return app.screen.query_one(Feed)


@dataclass
class Dash:
    """A dashboard under test: the app, its pilot, and every notification it showed."""

    app: DashboardApp
    pilot: Pilot[Any]
    notices: list[str] = field(default_factory=list)

    async def until(self, condition: Callable[[], object], what: str, timeout: float = 20.0) -> None:
        await until(self.pilot, condition, what, timeout)

    def noticed(self, text: str) -> bool:
        return any(text in notice for notice in self.notices)


@asynccontextmanager
async def dashboard(
    url: str,
    deployment: str | None = "demo",
    *,
    size: tuple[int, int] = (160, 48),
    wait: bool = True,
    **config: Any,
) -> AsyncIterator[Dash]:
    """A dashboard on ``deployment`` of the server at ``url``; with ``wait``, once its first snapshot
    is shown."""
    app = DashboardApp(DashboardConfig(server=url, deployment=deployment, **config))
    seen: list[str] = []

    def hook(message: Message) -> None:
        if isinstance(message, Notify):
            seen.append(message.notification.message)

    async with app.run_test(size=size, notifications=True, message_hook=hook) as pilot:
        dash = Dash(app, pilot, seen)
        if wait and deployment is not None:
            await dash.until(lambda: feed_of(app).connected and len(app.model.services) > 0, "the snapshot")
        yield dash
