"""The signals that ask a process of ours to stop: Ctrl-C, ``kill``, and its terminal closing.

A terminal that closes (its window, an ssh session that drops, ``tmux kill-session``) sends
SIGHUP, whose default is to end the process at once: running tasks were cut off and run again
at the next start, where Ctrl-C or ``kill`` let them finish. SIGHUP is left alone when it is
ignored on the way in: ``nohup`` ignores it so that the process outlives its terminal.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["handling_stop_signals", "stop_signals"]


def stop_signals() -> tuple[signal.Signals, ...]:
    """SIGINT and SIGTERM, and SIGHUP unless this process ignores it (``nohup``)."""
    if signal.getsignal(signal.SIGHUP) is signal.SIG_IGN:
        return (signal.SIGINT, signal.SIGTERM)
    return (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextmanager
def handling_stop_signals(
    loop: asyncio.AbstractEventLoop, handler: Callable[[signal.Signals], None]
) -> Iterator[None]:
    """Within the block, each of :func:`stop_signals` calls ``handler(signal)`` on ``loop``;
    after it, they are back to Python's defaults."""
    signals = stop_signals()
    for sig in signals:
        loop.add_signal_handler(sig, handler, sig)
    try:
        yield
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
