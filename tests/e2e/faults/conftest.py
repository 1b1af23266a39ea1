"""Fixtures of the fault tests: a Deployment of fault_app services, started and closed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from llamactl.server.deployment import Deployment

from .apps import App, write_fault_app

Start = Callable[..., Awaitable[tuple[Deployment, App]]]


@pytest.fixture
async def start_app(tmp_path: Path) -> AsyncIterator[Start]:
    """``await start_app(services, **options)``: write the app, start it, wait for every replica."""
    started: list[Deployment] = []

    async def start(
        services: dict[str, dict[str, Any]], *, heartbeat: float = 0.5, **options: Any
    ) -> tuple[Deployment, App]:
        app = write_fault_app(tmp_path / "app", services, **options)
        deployment = Deployment.from_file(
            app.file, heartbeat_interval=heartbeat, report_interval=1.0, stop_grace=5
        )
        started.append(deployment)
        await deployment.start()
        await deployment.wait_ready(timeout=90, all_replicas=True)
        return deployment, app

    yield start
    for deployment in started:
        await deployment.close()
