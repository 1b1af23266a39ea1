"""A run that waits for a person's answer is suspended (its worker stops), and goes on from its
question in a later run: execute() with ``suspend`` and ``ask_first``."""

from __future__ import annotations

import asyncio
from typing import Any

from workflows.context.serializers import JsonSerializer
from workflows.events import HumanResponseEvent

from llamactl.server.protocol import WorkerMessageKind
from llamactl.server.services.adapters import Runnable
from llamactl.server.services.execution import Suspend, TaskOutcome, execute
from llamactl.server.services.workflow_runs import WorkflowRunnable

from .harness import TaskIO

SUSPENDED = WorkerMessageKind.TASK_SUSPENDED
COMPLETED = WorkerMessageKind.TASK_COMPLETED


def answer(io: TaskIO, text: str, input_id: str | None = None) -> None:
    io.send(JsonSerializer().serialize(HumanResponseEvent(response=text)), input_id)


async def start(
    runnable: Runnable,
    io: TaskIO,
    suspend: Suspend,
    *,
    context: dict[str, Any] | None = None,
    ask_first: dict[str, Any] | None = None,
    **kwargs: Any,
) -> asyncio.Task[TaskOutcome]:
    return asyncio.create_task(
        execute(
            runnable,
            kwargs=kwargs,
            context=context,
            emit=io.emit,
            inputs=io.inputs(),
            suspend=suspend,
            ask_first=ask_first,
        )
    )


def prepared(runnable: Runnable) -> int:
    assert isinstance(runnable, WorkflowRunnable)
    return int(type(runnable.workflow).prepared)  # type: ignore[attr-defined]


async def test_a_suspended_run_goes_on_from_its_question_without_running_its_steps_again(load: Any) -> None:
    flow = load("flows:prepare_then_ask")
    first, suspend = TaskIO(), Suspend()
    running = await start(flow, first, suspend, what="deploy")
    await first.wait_for(lambda: "InputRequiredEvent" in first.types())
    suspend.set()
    outcome = await asyncio.wait_for(running, 10)
    assert outcome.kind is SUSPENDED
    assert outcome.context is not None
    assert outcome.question == first.events[-1]
    assert outcome.question["value"] == {"prefix": "deploy?"}
    assert prepared(flow) == 1

    second = TaskIO()
    resumed = await start(flow, second, Suspend(), context=outcome.context, ask_first=outcome.question)
    await second.wait_for(lambda: "InputRequiredEvent" in second.types())
    assert second.events[0] == outcome.question  # asked again, first of all
    answer(second, "yes", "a1")
    done = await asyncio.wait_for(resumed, 10)
    assert (done.kind, done.result) == (COMPLETED, "deploy: yes")
    assert prepared(flow) == 1  # its first step did not run again
    assert second.types() == ["InputRequiredEvent", "EventDelivered", "StopEvent"]


async def test_a_suspend_while_the_run_does_not_wait_leaves_it_be(load: Any) -> None:
    io, suspend = TaskIO(), Suspend()
    suspend.set()
    outcome = await asyncio.wait_for(await start(load("flows:counter"), io, suspend), 10)
    assert outcome.kind is COMPLETED
    assert not suspend.future.done()  # taken, and rearmed: a later question would be suspended


async def test_a_run_that_got_its_answer_is_not_suspended(load: Any) -> None:
    io, suspend = TaskIO(), Suspend()
    running = await start(load("flows:asker"), io, suspend)
    await io.wait_for(lambda: "InputRequiredEvent" in io.types())
    answer(io, "Ada", "a1")
    await io.wait_for(lambda: "EventDelivered" in io.types())
    suspend.set()
    outcome = await asyncio.wait_for(running, 10)
    assert (outcome.kind, outcome.result) == (COMPLETED, "hello Ada")


async def test_a_context_that_waited_in_a_step_the_code_lacks_cannot_be_resumed(load: Any) -> None:
    """Restored into a workflow without the step it waited in, a run would wait, silently, for
    its whole timeout: the worker runs the task from its start instead."""
    flow = load("flows:prepare_then_ask")
    io, suspend = TaskIO(), Suspend()
    running = await start(flow, io, suspend)
    await io.wait_for(lambda: "InputRequiredEvent" in io.types())
    suspend.set()
    outcome = await asyncio.wait_for(running, 10)
    assert outcome.context is not None
    assert flow.cannot_resume(outcome.context) is None
    reason = load("flows:counter").cannot_resume(outcome.context)
    assert reason == "the workflow has no step ask any more (the run waited in it)"
    assert load("funcs:add").cannot_resume(outcome.context) == "this service is not a workflow"
