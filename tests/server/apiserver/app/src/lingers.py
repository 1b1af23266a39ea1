"""A function that takes as long as it is told, so a task can still run while something happens."""

import asyncio


async def linger(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "done"
