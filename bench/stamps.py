"""Timestamps at chosen calls of a process, kept in memory and written to a file at its exit.

Shared by the stage probes (``bench/stage_probe.py`` in the server, ``bench/stage_probe_worker.py``
in its workers). A stamp is ``(stage, time.perf_counter_ns())``: CLOCK_MONOTONIC, the same in
every process of the machine, so the stamps of several processes merge into one timeline. Light
on purpose (the standard library only): a worker imports it before its own modules.
"""

from __future__ import annotations

import atexit
import collections
import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["MAX_EVENTS", "events", "note", "stamped", "stamped_async", "write_at_exit"]

MAX_EVENTS = 400_000
"""Stamps kept per process at most (the latest)."""

events: collections.deque[tuple[str, int]] = collections.deque(maxlen=MAX_EVENTS)


def note(stage: str) -> None:
    """Stamp ``stage`` now."""
    events.append((stage, time.perf_counter_ns()))


def stamped(stage: str, method: Callable[..., Any], when: Callable[[Any], bool] | None = None) -> Any:
    """``method`` stamping ``stage`` at each call (``when``: only the calls it says yes to, given
    the instance)."""
    add = events.append
    clock = time.perf_counter_ns

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        if when is None or when(self):
            add((stage, clock()))
        return method(self, *args, **kwargs)

    return wrapper


def stamped_async(stage: str, method: Callable[..., Any], end: str | None = None) -> Any:
    """The coroutine function ``method`` stamping ``stage`` as each call begins (and ``end`` as
    it returns or raises): a coroutine of its own around it, a little more than :func:`stamped`."""
    add = events.append
    clock = time.perf_counter_ns

    @functools.wraps(method)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        add((stage, clock()))
        try:
            return await method(*args, **kwargs)
        finally:
            if end is not None:
                add((end, clock()))

    return wrapper


def write_at_exit(out: Path) -> None:
    """Write the stamps to ``out`` (one ``<ns> <stage>`` a line) when the process exits."""
    atexit.register(_write, out)


def _write(out: Path) -> None:
    out.write_text("".join(f"{t} {stage}\n" for stage, t in events))
