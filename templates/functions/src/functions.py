"""Services that are plain Python functions.

A task's input becomes the keyword arguments. What a function returns is the task's result; an
(async) generator streams every item it yields as an event, and its last item is the result.
Results must be JSON-encodable (str, numbers, lists, dicts, pydantic models, dataclasses).
"""

import asyncio
from collections.abc import AsyncIterator


async def greet(name: str = "world") -> str:
    """`llamactl run --service greet -a name Ada` -> Hello, Ada!"""
    return f"Hello, {name}!"


def add(a: float, b: float) -> dict[str, float]:
    """`llamactl run --service add -a a 2 -a b 3` -> {"sum": 5}"""
    return {"sum": a + b}


async def countdown(start: int = 3, delay: float = 0.2) -> AsyncIterator[dict[str, object]]:
    """`llamactl run --service countdown --stream -a start 5`: one event per number, then liftoff."""
    for remaining in range(int(start), 0, -1):
        yield {"remaining": remaining}
        await asyncio.sleep(float(delay))
    yield {"remaining": 0, "message": "Liftoff!"}
