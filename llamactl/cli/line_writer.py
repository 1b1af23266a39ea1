"""Lines written to stderr from a thread of their own, so that a reader that stops reading never
blocks the server.

A write to a pipe or a terminal blocks once the reader falls behind: a pager left on its first
page (`llamactl serve 2>&1 | less`), Ctrl-S in a terminal, a log collector that hangs. Written
from the event loop, that one write stopped the whole server: no HTTP answer, no task, no
heartbeat. Here the loop only queues the line; a thread writes it. At most :data:`LIMIT_BYTES`
wait; past that, lines are dropped, and where they went missing a line says how many.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["FLUSH_TIMEOUT", "LIMIT_BYTES", "LineWriter"]

LIMIT_BYTES = 1024 * 1024
"""Text waiting to be written, at most; lines past it are dropped (and counted)."""
_BATCH_BYTES = 64 * 1024
"""Text written in one call, at most (lines that waited meanwhile go together)."""
FLUSH_TIMEOUT = 5.0
"""Seconds :meth:`LineWriter.close` waits for the lines still queued (a reader that stopped
reading must not keep the server from exiting)."""


@dataclass(slots=True)
class _Gap:
    """Lines dropped at this place in the output."""

    count: int

    def line(self) -> str:
        lines = "line" if self.count == 1 else "lines"
        return (
            f"[{self.count:,} {lines} not shown here: stderr was not read fast enough "
            f"({LIMIT_BYTES // 1024:,} KiB were waiting)]"
        )


class LineWriter:
    """Writes the lines :meth:`put` gets on a thread, in order: ``write(text)`` gets one line, or
    the lines that waited meanwhile joined by newlines (without the last one's newline).

    ``put`` never blocks. ``write`` is expected to deal with its own errors (a broken pipe, a
    full disk); one it raises loses the lines of that call only.
    """

    def __init__(
        self,
        write: Callable[[str], None],
        *,
        limit_bytes: int = LIMIT_BYTES,
    ) -> None:
        self._write = write
        self._limit = limit_bytes
        self._queue: deque[str | _Gap] = deque()
        self._bytes = 0
        self._closing = False
        self._cond = threading.Condition()
        self.dropped = 0
        """Lines dropped so far."""
        self._thread = threading.Thread(target=self._run, name="stderr-lines", daemon=True)
        self._thread.start()

    def put(self, line: str) -> None:
        """Queue ``line`` (without its newline); drop it if the queue is full."""
        size = len(line) + 1
        with self._cond:
            if self._queue and self._bytes + size > self._limit:
                self.dropped += 1
                last = self._queue[-1]
                if isinstance(last, _Gap):
                    last.count += 1
                else:
                    self._queue.append(_Gap(1))
                return
            self._queue.append(line)
            self._bytes += size
            self._cond.notify()

    def close(self, timeout: float = FLUSH_TIMEOUT) -> bool:
        """Write what is queued, waiting at most ``timeout`` seconds; return whether all of it
        was written. The thread ends once the queue is empty."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return
                # What is waiting goes out in one write: one call (and one flush) per line could
                # not keep up with a worker that prints as fast as it can, even into a file.
                batch: list[str] = []
                size = 0
                while self._queue and size < _BATCH_BYTES:
                    item = self._queue.popleft()
                    if isinstance(item, str):
                        self._bytes -= len(item) + 1
                        size += len(item) + 1
                        batch.append(item)
                    else:
                        batch.append(item.line())
            with contextlib.suppress(Exception):  # nobody to tell: these lines are lost, not the next
                self._write("\n".join(batch))
