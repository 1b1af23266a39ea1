"""The echo workflow, run in-process: `pytest` from the project folder, no server needed."""

import asyncio

from workflow import EchoWorkflow


async def echo(**kwargs: object) -> object:
    return await EchoWorkflow(timeout=10).run(**kwargs)


def test_echo_answers_with_the_message() -> None:
    assert asyncio.run(echo(message="hi")) == "Message received: hi"


def test_echo_without_a_message() -> None:
    assert asyncio.run(echo()) == "Message received: "
