"""A broker-free stand-in for the worker: collects emitted events, feeds task inputs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

from llamactl.server.protocol import TaskInput, TaskInputKind
from llamactl.server.services.spec import WorkerSpec

DEADLINE = 10.0
WORKFLOWS = tuple(int(p) for p in version("llama-index-workflows").split(".")[:2])
"""The installed ``workflows`` library's (major, minor): the suite also runs on 1.3.0."""
TAKES_RUN_ID = WORKFLOWS >= (2, 14)
"""``Workflow.run(run_id=...)`` names the run from ``workflows`` 2.14 on."""


class TaskIO:
    """``emit`` records envelopes; ``inputs()`` yields what ``send``/``cancel`` put in."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._changed = asyncio.Event()
        self._inputs: asyncio.Queue[TaskInput] = asyncio.Queue()

    async def emit(self, envelope: dict[str, Any], *, last: bool = False) -> None:
        self.events.append(envelope)
        self._changed.set()

    async def inputs(self) -> AsyncIterator[TaskInput]:
        while True:
            yield await self._inputs.get()

    def send(self, event_obj_str: str, input_id: str | None = None) -> None:
        """An event sent in (``input_id``: its sender waits to learn that it reached the run)."""
        self._inputs.put_nowait(
            TaskInput(kind=TaskInputKind.EVENT, event_obj_str=event_obj_str, input_id=input_id)
        )

    def ask_where(self, input_id: str) -> None:
        """Ask where the run's code is now (answered with a TASK_WHERE naming ``input_id``)."""
        self._inputs.put_nowait(TaskInput(kind=TaskInputKind.WHERE, input_id=input_id))

    def cancel(self) -> None:
        self._inputs.put_nowait(TaskInput(kind=TaskInputKind.CANCEL))

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]

    async def wait_for(self, predicate: Callable[[], bool], deadline: float = DEADLINE) -> None:
        """Wait until ``predicate()`` holds, re-checking after every emitted event."""
        async with asyncio.timeout(deadline):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()


def worker_spec(source_dir: Path | str, import_path: str, **overrides: Any) -> WorkerSpec:
    """The spec of a test worker of service ``svc`` in deployment ``dep`` (no heartbeats to speak
    of, two tasks at once), with ``overrides``."""
    fields: dict[str, Any] = {
        "deployment": "dep",
        "service_id": "svc",
        "replica_id": "svc-1",
        "source_dir": str(source_dir),
        "import_path": import_path,
        "max_concurrency": 2,
        "lease": 30.0,
        "heartbeat_interval": 3600.0,
        "mq": {},
    }
    return WorkerSpec(**{**fields, **overrides})
