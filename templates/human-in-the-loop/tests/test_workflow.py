"""The approval workflow, run in-process: `pytest` from the project folder, no server needed.

The test plays the human: it waits for the question, then sends the answer into the run.
"""

import asyncio

from workflow import ApprovalWorkflow
from workflows.events import HumanResponseEvent, InputRequiredEvent


async def answer_with(response: str) -> tuple[str, object]:
    handler = ApprovalWorkflow(timeout=10).run(message="deploy")
    question = ""
    async for ev in handler.stream_events():
        if isinstance(ev, InputRequiredEvent):
            question = str(ev.get("prefix"))
            handler.ctx.send_event(HumanResponseEvent(response=response))
    return question, await handler


def test_waits_for_the_human_and_uses_the_answer() -> None:
    question, result = asyncio.run(answer_with("yes"))
    assert question == "May I deploy? Answer yes or no."
    assert result == "deploy: approved (the human said 'yes')"


def test_anything_but_yes_declines() -> None:
    assert asyncio.run(answer_with("later"))[1] == "deploy: declined (the human said 'later')"
