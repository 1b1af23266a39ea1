"""Where a worker is stuck: SIGUSR2 makes it print the stack of each of its threads.

The server asks for them before it gives up on a worker whose import never ends, so that the
error it then gives has the line to look at above it; a developer can ask any worker for them
with ``kill -USR2 <pid>``, and a worker that serves then also says where each task it runs
is. The handler is faulthandler's, written in C: it prints even while the worker is stuck in C
code that keeps the GIL, where no Python-level handler would run.
"""

from __future__ import annotations

import asyncio
import faulthandler
import signal
import sys
from collections.abc import Callable
from typing import TextIO

__all__ = ["STACKS_SIGNAL", "also_on_the_loop", "print_stacks_on_signal"]

STACKS_SIGNAL = signal.SIGUSR2


def print_stacks_on_signal(stream: TextIO | None = None, *, chain: bool = False) -> None:
    """From now on, :data:`STACKS_SIGNAL` prints every thread's stack to ``stream`` (stderr);
    with ``chain``, then calls the handler it had before."""
    faulthandler.register(STACKS_SIGNAL, file=stream or sys.stderr, all_threads=True, chain=chain)


def also_on_the_loop(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
    """Keep printing the stacks on :data:`STACKS_SIGNAL` (at once, from C), then run ``callback``
    on ``loop`` (once it is free): what only Python code can tell, such as where each coroutine
    waits, which no thread's stack shows. Each SIGUSR2 from then on does both."""
    # The loop's handler replaces faulthandler's; faulthandler registered again on top of it,
    # with chain, calls it after printing. (Between the two lines a SIGUSR2 would meet the
    # default action: microseconds, once per worker.)
    faulthandler.unregister(STACKS_SIGNAL)
    loop.add_signal_handler(STACKS_SIGNAL, callback)
    print_stacks_on_signal(chain=True)
