"""Plain Python services the engine tests run."""

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path


async def greet(name: str = "world") -> str:
    return f"hello {name}"


async def countdown(start: int = 3) -> AsyncIterator[dict[str, int]]:
    for n in range(int(start), 0, -1):
        yield {"n": n}


async def whoami(delay: float = 0.0) -> dict[str, object]:
    if delay:
        await asyncio.sleep(float(delay))
    return {"pid": os.getpid()}


async def crash_once(marker: str) -> str:
    """The first run records its pid in ``marker`` and hangs (the test kills it); later runs answer."""
    path = Path(marker)
    if not path.exists():
        path.write_text(str(os.getpid()))
        await asyncio.sleep(120)
    return f"survived after {path.read_text()} was killed"
