"""A workflow that reports its progress as a stream of events, then returns its result.

Every `ctx.write_event_to_stream(...)` reaches `llamactl run --stream`, `llamactl tasks events
TASK --follow`, the dashboard and the HTTP event streams (NDJSON and SSE) as soon as it is written.
"""

import asyncio

from workflows import Context, Workflow, step
from workflows.events import Event, StartEvent, StopEvent


class Progress(Event):
    """One step done: `step` of `total`."""

    step: int
    total: int
    note: str


class ProgressWorkflow(Workflow):
    @step
    async def work(self, ctx: Context, ev: StartEvent) -> StopEvent:
        message = str(ev.get("message", ""))
        steps = int(ev.get("steps", 3))
        delay = float(ev.get("delay", 0.2))  # seconds per step: the "work" this example pretends to do
        for n in range(1, steps + 1):
            await asyncio.sleep(delay)
            ctx.write_event_to_stream(Progress(step=n, total=steps, note=f"step {n} of {steps} done"))
        return StopEvent(result=f"Processed {message!r} in {steps} steps")


progress_workflow = ProgressWorkflow(timeout=120)
