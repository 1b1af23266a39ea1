"""The input pump's own events (answers to events sent in, where-answers) count against the
service's ``max-events`` like the run's: one too many stops the run, which fails with
TooManyEvents. Before, the pump ended there and the run went on without anyone reading its
inputs: a cancel sent afterwards was never read, and the task ran until its timeout or for ever."""

from __future__ import annotations

import asyncio
from typing import Any

from llamactl.server.errors import TooManyEvents
from llamactl.server.protocol import WorkerMessageKind
from llamactl.server.services.adapters import adapt
from llamactl.server.services.execution import execute

from .harness import DEADLINE, TaskIO


async def _waits_for_ever() -> str:
    await asyncio.Event().wait()
    return "never"


class _Limited(TaskIO):
    """Takes ``limit`` events, then refuses each one more as the worker does (``max-events``)."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    async def emit(self, envelope: dict[str, Any], *, last: bool = False) -> None:
        if len(self.events) >= self.limit:
            raise TooManyEvents("t1", self.limit, "svc")
        await super().emit(envelope, last=last)


async def test_an_answer_past_max_events_stops_the_run_and_fails_it() -> None:
    io = _Limited(limit=1)
    io.ask_where("w1")  # answered: the one event the task may stream
    io.ask_where("w2")  # its answer is one too many
    io.cancel()  # read only if the pump still reads (else the run waits for ever)
    async with asyncio.timeout(DEADLINE):
        outcome = await execute(
            adapt(_waits_for_ever),
            kwargs={},
            context=None,
            emit=io.emit,
            inputs=io.inputs(),
            cancel_grace=0.2,
        )
    assert outcome.kind is WorkerMessageKind.TASK_FAILED
    assert outcome.error is not None and outcome.error.startswith(
        "TooManyEvents: task t1 streamed more than 1"
    )
    assert io.types() == ["TaskWhere"]
