"""Workflows the end-to-end test apps share: echo, streaming, human in the loop, session counter, failing."""

from workflows import Context, Workflow, step
from workflows.events import (
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    StartEvent,
    StopEvent,
)


class Progress(Event):
    n: int


class EchoWorkflow(Workflow):
    @step
    async def echo(self, ev: StartEvent) -> StopEvent:
        return StopEvent(result=f"Message received: {ev.get('message', '')}")


class StreamingWorkflow(Workflow):
    @step
    async def stream(self, ctx: Context, ev: StartEvent) -> StopEvent:
        count = int(ev.get("count", 5))
        for n in range(count):
            ctx.write_event_to_stream(Progress(n=n))
        return StopEvent(result=count)


class HumanWorkflow(Workflow):
    @step
    async def ask(self, ctx: Context, ev: StartEvent) -> StopEvent:
        answer = await ctx.wait_for_event(
            HumanResponseEvent, waiter_event=InputRequiredEvent(prefix="What is the answer?")
        )
        return StopEvent(result=f"the human said {answer.response}")


class CounterWorkflow(Workflow):
    @step
    async def count(self, ctx: Context, ev: StartEvent) -> StopEvent:
        seen = await ctx.store.get("seen", default=0)
        await ctx.store.set("seen", seen + 1)
        return StopEvent(result=seen + 1)


class FailingWorkflow(Workflow):
    @step
    async def fail(self, ev: StartEvent) -> StopEvent:
        raise ValueError(f"cannot handle {ev.get('message', '')!r}")


echo_workflow = EchoWorkflow(timeout=30)
streaming_workflow = StreamingWorkflow(timeout=30)
hitl_workflow = HumanWorkflow(timeout=60)
counter_workflow = CounterWorkflow(timeout=30)
failing_workflow = FailingWorkflow(timeout=30)
