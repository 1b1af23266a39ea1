"""Stopping a task's run: asked to stop (a workflow's graceful cancel), then cancelled, and left
running when its code does not stop even so (a retry loop that catches ``CancelledError``, a
cleanup that takes its time), as a sync call that times out is left in its thread: its task ends
all the same, and :func:`abandoned_runs` counts it towards replacing the worker."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from .adapters import Run
from .errorinfo import error_line

__all__ = ["abandon", "abandoned_runs", "is_abandoned", "stop_run"]

log = logging.getLogger("llamactl.server.services.execution")

_ABANDONED: set[asyncio.Task[Any]] = set()
"""Runs whose code did not stop when cancelled, until it ends (the loop holds its tasks weakly)."""


async def stop_run(run: Run, main: asyncio.Task[Any], grace: float, label: str | None) -> bool:
    """Stop ``run`` (whose ``wait()`` is ``main``), ``grace`` seconds for each way of asking;
    True when it did not stop and was left running (:func:`abandon`)."""
    if run.graceful_cancel:
        try:
            async with asyncio.timeout(grace):
                await run.cancel()
        except Exception as exc:
            log.warning("graceful cancel failed: %s", error_line(exc))
        if not main.done():
            await asyncio.wait({main}, timeout=grace)
    if not main.done():
        main.cancel()
        await asyncio.wait({main}, timeout=grace)
    if main.done():
        return False
    abandon(main, label, grace)
    return True


def abandon(main: asyncio.Task[Any], label: str | None, grace: float) -> None:
    """Leave ``main``, which did not stop within ``grace`` seconds of its cancel, running until it
    ends (what it streams meanwhile is the caller's to drop)."""
    log.warning(
        "%s: its code did not stop within %g s of being cancelled: it is left running in this worker",
        label or "a task",
        grace,
    )
    _ABANDONED.add(main)
    main.add_done_callback(_forget)


def is_abandoned(main: asyncio.Task[Any]) -> bool:
    return main in _ABANDONED


def abandoned_runs() -> int:
    """Runs of this process left running after their tasks ended: each holds what it does until
    it ends, as an abandoned sync call does."""
    return len(_ABANDONED)


def _forget(main: asyncio.Task[Any]) -> None:
    _ABANDONED.discard(main)
    if not main.cancelled():
        main.exception()  # taken: nobody waits for it any more
