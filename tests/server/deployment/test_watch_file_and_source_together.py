"""A deployment file and a service's source changed in one batch of the watch (real workers)."""

from __future__ import annotations

import asyncio
import contextlib
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from llamactl.server.deployment import Deployment
from llamactl.server.deployment.replicas import ReloadOutcome
from llamactl.server.deployment.watcher import DeploymentWatcher
from llamactl.server.types import TaskStatus
from tests.e2e.waiting import wait_until

DEPLOYMENT = """\
name: together
services:
  a:
    name: A
    source: {type: local, location: a}
    path: svc:handle
  b:
    name: B
    source: {type: local, location: b}
    path: svc:handle
"""


def service_code(answer: str) -> str:
    return textwrap.dedent(
        f"""\
        async def handle(message: str = "") -> str:
            return "{answer}"
        """
    )


class Watched:
    def __init__(self, root: Path, deployment: Deployment) -> None:
        self.root = root
        self.deployment = deployment
        self.outcomes: asyncio.Queue[ReloadOutcome] = asyncio.Queue()
        self.lines: list[str] = []
        self.watcher = DeploymentWatcher(
            deployment, on_event=self.lines.append, on_reload=self.outcomes.put_nowait
        )

    async def next_reload(self) -> ReloadOutcome:
        return await asyncio.wait_for(self.outcomes.get(), 30)

    async def answer(self, service: str) -> object:
        task = await self.deployment.run(service, message="hi", timeout=30)
        assert task.status is TaskStatus.COMPLETED, task.error
        return task.result


@pytest_asyncio.fixture
async def watched(tmp_path: Path) -> AsyncIterator[Watched]:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "svc.py").write_text(service_code(f"{name}1"))
    (tmp_path / "deployment.yml").write_text(DEPLOYMENT)
    stop = asyncio.Event()
    async with Deployment.from_file(tmp_path / "deployment.yml", stop_grace=5) as deployment:
        await deployment.wait_ready(timeout=60)
        state = Watched(tmp_path, deployment)
        watching = asyncio.create_task(state.watcher.run(stop))
        await asyncio.wait_for(state.watcher.ready.wait(), 10)
        try:
            yield state
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(watching, 10)


async def test_source_edited_with_the_deployment_file_is_reloaded(watched: Watched) -> None:
    """A `git pull` or a branch switch that changes code and the file at once: before, the
    batch applied the file and dropped the source change, and `a` ran its old code."""
    (watched.root / "a" / "svc.py").write_text(service_code("a2"))
    (watched.root / "deployment.yml").write_text("# pulled\n" + DEPLOYMENT)
    outcome = await watched.next_reload()
    assert (outcome.service_id, outcome.generation, outcome.ok) == ("a", 2, True)
    assert await watched.answer("a") == "a2"
    assert await watched.answer("b") == "b1"


async def test_a_service_the_file_edit_reloads_is_reloaded_once(watched: Watched) -> None:
    (watched.root / "a" / "svc.py").write_text(service_code("a2"))
    (watched.root / "deployment.yml").write_text(DEPLOYMENT.replace("name: A", "name: A2"))
    outcome = await watched.next_reload()
    assert (outcome.service_id, outcome.generation, outcome.ok) == ("a", 2, True)
    assert await watched.answer("a") == "a2"
    assert sum("a: source changed, reloading" in line for line in watched.lines) == 0
    assert watched.outcomes.empty()


def gated_code(answer: str, root: Path) -> str:
    """Code whose import, in a worker given GATE, says it began and waits for ``root/go``."""
    return textwrap.dedent(
        f"""\
        import os
        import time
        from pathlib import Path

        _root = Path({str(root)!r})
        if os.environ.get("GATE"):
            (_root / "began").touch()
            _deadline = time.monotonic() + 20
            while not (_root / "go").exists():
                if time.monotonic() > _deadline:
                    raise RuntimeError("waited 20 s at import for go")
                time.sleep(0.02)


        async def handle(message: str = "") -> str:
            return "{answer}"
        """
    )


async def test_a_source_edited_while_the_file_is_applied_is_reloaded(watched: Watched) -> None:
    """The file's reload of a takes a while; b is edited meanwhile. Before, the watch was made
    anew once the file was applied, and b's edit, seen by the watch made before, was lost."""
    (watched.root / "a" / "svc.py").write_text(gated_code("a2", watched.root))
    outcome = await watched.next_reload()
    assert (outcome.service_id, outcome.generation, outcome.ok) == ("a", 2, True)
    (watched.root / "deployment.yml").write_text(
        DEPLOYMENT.replace("path: svc:handle", 'path: svc:handle\n    env: {GATE: "1"}', 1)
    )
    await wait_until((watched.root / "began").exists, 30)  # the file's reload of a is under way
    (watched.root / "b" / "svc.py").write_text(service_code("b2"))
    (watched.root / "go").touch()
    outcomes = {
        (o.service_id, o.generation, o.ok) for o in [await watched.next_reload(), await watched.next_reload()]
    }
    assert outcomes == {("a", 3, True), ("b", 2, True)}
    assert await watched.answer("b") == "b2"
