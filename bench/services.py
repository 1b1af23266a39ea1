"""The services the benchmark deploys, and that the baseline server runs in its handlers.

This module imports nothing from ``bench``: it is copied as ``bench_services.py`` into the
generated deployment's source folder.
"""

from __future__ import annotations

from workflows import Context, Workflow, step
from workflows.events import Event, StartEvent, StopEvent

__all__ = ["EchoWorkflow", "StreamingWorkflow", "Tick", "echo", "echo_workflow", "streaming_workflow"]


async def echo(message: str) -> str:
    """The plain-function service."""
    return f"Message received: {message}"


class EchoWorkflow(Workflow):
    """One step that answers like :func:`echo`."""

    @step
    async def echo(self, ev: StartEvent) -> StopEvent:
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
