"""The progress workflow, run in-process: `pytest` from the project folder, no server needed."""

import asyncio

from workflow import Progress, ProgressWorkflow


async def run_and_collect(**kwargs: object) -> tuple[list[Progress], object]:
    handler = ProgressWorkflow(timeout=10).run(**kwargs)
    events = [ev async for ev in handler.stream_events() if isinstance(ev, Progress)]
    return events, await handler


def test_streams_one_event_per_step_then_the_result() -> None:
    events, result = asyncio.run(run_and_collect(message="hi", steps=4, delay=0))
    assert [(ev.step, ev.total) for ev in events] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert result == "Processed 'hi' in 4 steps"
