"""Shared by the supervisor tests: event/output recorder, condition waits, pid checks."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from llamactl.server.supervisor import EventKind, ProcessSpec, SupervisorEvent

REPO_ROOT = Path(__file__).resolve().parents[3]


@dataclass
class Recorder:
    events: list[SupervisorEvent] = field(default_factory=list)
    lines: list[tuple[str, str]] = field(default_factory=list)

    def on_event(self, event: SupervisorEvent) -> None:
        self.events.append(event)

    def output(self, name: str, line: str) -> None:
        self.lines.append((name, line))

    def of(self, kind: EventKind, key: str | None = None) -> list[SupervisorEvent]:
        return [e for e in self.events if e.kind == kind and (key is None or e.key == key)]

    def printed(self, name: str) -> list[str]:
        return [line for n, line in self.lines if n == name]


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``predicate`` until it holds; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


def pid_gone(pid: int) -> bool:
    """No such process, or only a zombie (PID 1 in some containers never reaps orphans)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):  # the latter: reaped between open and read
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


WaitUntil = Callable[..., Awaitable[None]]
ScriptFactory = Callable[..., ProcessSpec]
