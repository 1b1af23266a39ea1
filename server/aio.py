"""Asyncio helpers for what Python 3.11's own way gets wrong: a cancel of the caller must never be lost."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

__all__ = ["cancel_and_wait", "wait_set"]


async def cancel_and_wait(future: asyncio.Future[Any]) -> None:
    """Cancel ``future`` (a task, usually) and return once it has ended.

    Its own CancelledError is swallowed and any other exception it ends with is raised. A cancel
    of the caller that arrives while ``future`` winds down is raised once it has ended, whatever
    ``future`` ended with, where ``contextlib.suppress(CancelledError)`` around ``await task``
    would take it for the task's own and the caller would run on (a close or a stop that cannot
    be cancelled).
    """
    current = asyncio.current_task()
    before = current.cancelling() if current is not None else 0

    def cancelled_meanwhile() -> bool:
        return current is not None and current.cancelling() > before

    future.cancel()
    try:
        await future
    except asyncio.CancelledError:
        if cancelled_meanwhile():
            raise
        return
    except BaseException as exc:
        if cancelled_meanwhile():  # ``future`` failed as it wound down, and we were cancelled too
            raise asyncio.CancelledError from exc
        raise
    if cancelled_meanwhile():
        raise asyncio.CancelledError  # ``future`` swallowed the cancel that was meant for us too


async def wait_set(event: asyncio.Event, timeout: float) -> bool:
    """Wait until ``event`` is set or ``timeout`` seconds pass; True if it is set."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await event.wait()
    return event.is_set()
