"""The services the benchmark deploys, and that the baseline server runs in its handlers.

This module imports nothing from ``bench``: it is copied as ``bench_services.py`` into the
generated deployment's source folder.
"""

from __future__ import annotations

import asyncio
import time

from workflows import Context, Workflow, step
from workflows.events import Event, StartEvent, StopEvent

__all__ = [
    "CPU_STEP_SECONDS",
    "IO_STEP_SECONDS",
    "CpuWorkflow",
    "EchoWorkflow",
    "IoWorkflow",
    "StreamingWorkflow",
    "Tick",
    "cpu_workflow",
    "echo",
    "echo_workflow",
    "io_workflow",
    "streaming_workflow",
]

CPU_STEP_SECONDS = 0.005
"""CPU time :class:`CpuWorkflow`'s step burns."""
IO_STEP_SECONDS = 0.05
"""Time :class:`IoWorkflow`'s step awaits (a stand-in for a model or HTTP call)."""


async def echo(message: str) -> str:
    """The plain-function service."""
    return f"Message received: {message}"


class EchoWorkflow(Workflow):
    """One step that answers like :func:`echo`."""

    @step
    async def echo(self, ev: StartEvent) -> StopEvent:
        return StopEvent(result=f"Message received: {ev.get('message', '')}")


class CpuWorkflow(Workflow):
    """One step that burns :data:`CPU_STEP_SECONDS` of CPU (holding the GIL), then echoes."""

    @step
    async def work(self, ev: StartEvent) -> StopEvent:
        until = time.thread_time() + CPU_STEP_SECONDS
        n = 0
        while time.thread_time() < until:
            n += 1
        return StopEvent(result=f"Message received: {ev.get('message', '')}")


class IoWorkflow(Workflow):
    """One step that awaits :data:`IO_STEP_SECONDS`, then echoes."""

    @step
    async def wait(self, ev: StartEvent) -> StopEvent:
        await asyncio.sleep(IO_STEP_SECONDS)
        return StopEvent(result=f"Message received: {ev.get('message', '')}")


class Tick(Event):
    """A streamed progress event."""

    n: int


class StreamingWorkflow(Workflow):
    """Writes ``count`` events to the stream, the first one at once, then stops."""

    @step
    async def stream(self, ctx: Context, ev: StartEvent) -> StopEvent:
        count = int(ev.get("count", 3))
        for n in range(count):
            ctx.write_event_to_stream(Tick(n=n))
        return StopEvent(result=count)


echo_workflow = EchoWorkflow(timeout=60)
streaming_workflow = StreamingWorkflow(timeout=60)
cpu_workflow = CpuWorkflow(timeout=60)
io_workflow = IoWorkflow(timeout=60)
