"""The functions, called in-process: `pytest` from the project folder, no server needed."""

import asyncio

from functions import add, countdown, greet


def test_greet() -> None:
    assert asyncio.run(greet("Ada")) == "Hello, Ada!"
    assert asyncio.run(greet()) == "Hello, world!"


def test_add() -> None:
    assert add(2, 3) == {"sum": 5}


async def collect(start: int) -> list[dict[str, object]]:
    return [item async for item in countdown(start=start, delay=0)]


def test_countdown_yields_each_number_then_liftoff() -> None:
    items = asyncio.run(collect(3))
    assert items == [
        {"remaining": 3},
        {"remaining": 2},
        {"remaining": 1},
        {"remaining": 0, "message": "Liftoff!"},
    ]
