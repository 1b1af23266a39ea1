"""Waiting on conditions with deadlines (never bare sleeps)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


async def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> None:
    """Return as soon as ``predicate()`` is true; raise TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float, interval: float = 0.05) -> None:
    """Return as soon as ``await check()`` is true; raise TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


def wait_until_blocking(predicate: Callable[[], bool], timeout: float, what: str = "condition") -> None:
    """:func:`wait_until` for a test that is not async: sleeps between the checks."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout}s")
        time.sleep(0.05)
