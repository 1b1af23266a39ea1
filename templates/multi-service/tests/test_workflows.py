"""Both services' workflows, run in-process: `pytest` from the project folder, no server needed.

Passing the same Context to two runs is what llamactl does for two tasks of one session.
"""

import asyncio

from chat import ChatWorkflow
from shout import ShoutWorkflow
from workflows import Context


async def two_turns() -> tuple[object, object, object]:
    chat = ChatWorkflow(timeout=10)
    session = Context(chat)
    first = await chat.run(ctx=session, message="hi")
    second = await chat.run(ctx=session, message="how are you?")
    fresh = await chat.run(message="hello")  # no Context: a new session
    return first, second, fresh


def test_the_context_carries_over_between_runs() -> None:
    first, second, fresh = asyncio.run(two_turns())
    assert first == "Message 1 of this session: hi"
    assert second == "Message 2 of this session: how are you?; earlier: hi"
    assert fresh == "Message 1 of this session: hello"


async def shout(message: str) -> object:
    return await ShoutWorkflow(timeout=10).run(message=message)


def test_shout() -> None:
    assert asyncio.run(shout("hi")) == "HI!"
