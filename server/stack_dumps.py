"""Where a worker is stuck: SIGUSR2 makes it print the stack of each of its threads.

The server asks for them before it gives up on a worker whose import never ends, so that the
error it then gives has the line to look at above it; a developer can ask any worker for them
with ``kill -USR2 <pid>``. The handler is faulthandler's, written in C: it prints even while the
worker is stuck in C code that keeps the GIL, where no Python-level handler would run.
"""

from __future__ import annotations

import faulthandler
import signal
import sys
from typing import TextIO

__all__ = ["STACKS_SIGNAL", "print_stacks_on_signal"]

STACKS_SIGNAL = signal.SIGUSR2


def print_stacks_on_signal(stream: TextIO | None = None) -> None:
    """From now on, :data:`STACKS_SIGNAL` prints every thread's stack to ``stream`` (stderr)."""
    faulthandler.register(STACKS_SIGNAL, file=stream or sys.stderr, all_threads=True, chain=False)
