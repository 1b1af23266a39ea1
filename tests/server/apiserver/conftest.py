"""A real API server (``serve()`` on port 0) in the test module's event loop, over a deployment
of small workflows copied into a temporary folder, driven with httpx."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from llamactl.server.apiserver import serve

APP = Path(__file__).parent / "app"
SHARED_FLOWS = Path(__file__).parents[2] / "e2e" / "apps" / "engine" / "src" / "flows.py"
"""The workflows the end-to-end apps share (echo, streaming, human in the loop, counter, failing)."""

DEPLOYMENT_YML = """\
name: main
default-service: echo
control-plane:
  port: {cp_port}
services:
  echo:
    name: Echo
    source: {{type: local, location: src}}
    path: flows:echo_workflow
  stream:
    name: Streaming
    source: {{type: local, location: src}}
    path: flows:streaming_workflow
  hitl:
    name: Human in the loop
    source: {{type: local, location: src}}
    path: flows:hitl_workflow
  counter:
    name: Session counter
    source: {{type: local, location: src}}
    path: flows:counter_workflow
  boom:
    name: Raises
    source: {{type: local, location: src}}
    path: flows:failing_workflow
"""

OTHER_YML = """\
name: {name}
services:
  echo:
    source: {{type: local, location: src}}
    path: {path}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Running:
    url: str
    app_dir: Path
    cp_url: str
    events: list[str] = field(default_factory=list)


async def start_server(stop: asyncio.Event, **kwargs: object) -> tuple[str, asyncio.Task[None]]:
    """Start ``serve(port=0, ...)`` in the current loop; return its URL once it is ready."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[str] = loop.create_future()
    task = asyncio.create_task(serve(port=0, on_ready=ready.set_result, stop=stop, **kwargs))  # type: ignore[arg-type]
    waiting: list[asyncio.Future[Any]] = [ready, task]
    await asyncio.wait(waiting, timeout=120, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()
        raise RuntimeError("serve() returned before it was ready")
    if not ready.done():
        stop.set()
        await task
        raise TimeoutError("the server did not get ready within 120 s")
    return ready.result(), task


@pytest.fixture(scope="module")
def app_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("apiserver") / "app"
    shutil.copytree(APP, target, ignore=shutil.ignore_patterns(".llamactl", "__pycache__"))
    shutil.copyfile(SHARED_FLOWS, target / "src" / "flows.py")
    return target


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def running(app_dir: Path) -> AsyncIterator[Running]:
    cp_port = free_port()
    (app_dir / "deployment.yml").write_text(DEPLOYMENT_YML.format(cp_port=cp_port))
    events: list[str] = []
    stop = asyncio.Event()
    url, task = await start_server(
        stop, deployment_files=[app_dir / "deployment.yml"], on_event=events.append
    )
    try:
        yield Running(url=url, app_dir=app_dir, cp_url=f"http://127.0.0.1:{cp_port}", events=events)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=60)


@pytest_asyncio.fixture(loop_scope="module")
async def client(running: Running) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=running.url, timeout=60) as http:
        yield http


def task_input(**kwargs: object) -> str:
    return json.dumps(kwargs)


@dataclass
class SseFrame:
    id: int | None
    event: str
    data: str


class SseReader:
    """Reads SSE frames off one streamed response; skips comments (``: keepalive``) and ``retry:``."""

    def __init__(self, response: httpx.Response) -> None:
        self._lines = response.aiter_lines()

    async def next(self) -> SseFrame | None:
        """The next frame, or None when the stream has ended."""
        current: dict[str, str] = {}
        async for line in self._lines:
            if line == "":
                if "event" in current or "data" in current:
                    return SseFrame(
                        id=int(current["id"]) if "id" in current else None,
                        event=current.get("event", "message"),
                        data=current.get("data", ""),
                    )
                current = {}
                continue
            if line.startswith(":"):
                continue
            key, _, value = line.partition(":")
            current[key] = value.removeprefix(" ")
        return None


async def read_sse(
    response: httpx.Response, *, until: str | None = None, limit: int = 10_000
) -> list[SseFrame]:
    """SSE frames of ``response`` until the stream ends, a frame of type ``until``, or ``limit`` frames."""
    reader = SseReader(response)
    frames: list[SseFrame] = []
    while len(frames) < limit:
        frame = await reader.next()
        if frame is None:
            break
        frames.append(frame)
        if frame.event == until:
            break
    return frames
