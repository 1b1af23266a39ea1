"""Watches a worker's event loop from a thread: a loop blocked by user code is seen, explained,
and, when it holds a task past its timeout or the worker past its lease, broken.

A blocking call in an async step (``time.sleep``, a busy loop, a synchronous client) stops the
whole worker: no heartbeat, no lease extension, no cooperative cancel. From outside the loop the
watchdog:

* keeps the worker known to be alive through the queue's side line (``MessageQueue.sidecar``):
  a blocked worker is not a dead one, so the broker leaves its tasks with it (until their leases
  run out) instead of handing them to another replica that the same code would block too, and
  gives it nothing new until its loop answers again;
* publishes the ``task.started`` reports the blocked loop could not send, so the task's record
  says it runs (and which attempt) during the stall;
* logs where the loop is stuck (the main thread's innermost frames of user code) once it has been
  blocked for ``warn_after`` seconds;
* when a running task passes its timeout while the loop is blocked, interrupts the blocking call
  (a signal whose handler raises :class:`LoopBlockedError` in the main thread), so the step fails
  and the task ends with its timeout error through the normal path;
* ends the worker (exit code :data:`EXIT_STALLED`) when the loop stays blocked ``exit_after``
  seconds (its leases are gone by then: the broker gave its tasks to others), or ``interrupt_grace``
  seconds after an interrupt that did not take; the supervisor starts a fresh one.

The watchdog is a Python thread: code that holds the GIL for ever (a regular expression that
backtracks without end, a C extension's deadlock) stops it too. For that it keeps re-arming
``faulthandler``'s timer, whose thread needs no GIL: if the watchdog has not re-armed it for
:data:`FROZEN_MARGIN` seconds past its own limits, that thread writes every thread's Python stack
(the frozen user code on top) to stderr and ends the worker (exit code 1). A process stopped
whole (SIGSTOP) is killed by the server instead (``deployment/silent_workers.py``).

A loop blocked writing to an output nobody reads (the server that reads it stopped) is left
alone: user code is not to blame, and the write goes on once the server reads again.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import logging
import math
import os
import select
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from llamactl.server.mq.base import Sidecar
from llamactl.server.supervisor.exit_note import declare_exit

__all__ = ["EXIT_STALLED", "LoopBlockedError", "LoopWatchdog", "Report", "output_full"]

log = logging.getLogger(__name__)

EXIT_STALLED = 4
"""Exit code of a worker whose event loop stayed blocked (the supervisor restarts it)."""
_CHECK = 0.25
"""Seconds between two looks at the loop while it runs tasks."""
_IDLE_CHECK = 1.0
"""The most seconds between two looks while it runs none (at most half of ``warn_after``)."""
_VOUCH_AFTER = 0.5
"""Seconds of a blocked loop after which the side line speaks for it."""

FROZEN_MARGIN = 10.0
"""Seconds past ``exit_after + interrupt_grace`` before faulthandler ends a worker whose watchdog
thread could not run."""
_REARM_EVERY = 5.0
"""Seconds between two re-arms of faulthandler's timer (each starts a thread of its own)."""

Report = tuple[str, bytes, str, str]
"""topic, payload, msg_id, key: a report to publish for the blocked loop."""
_OURS = str(Path(__file__).resolve().parents[1])


def output_full() -> bool:
    """Whether this process's stdout or stderr is a pipe (or terminal) with no room left: its
    reader has stopped reading, and a write there waits until it reads again."""
    try:
        _, writable, _ = select.select([], [1, 2], [], 0)
    except (OSError, ValueError):  # closed: writes fail at once, they never wait
        return False
    return len(writable) < 2


class LoopBlockedError(Exception):
    """Raised inside code that blocked the worker's event loop past a task's timeout."""


class LoopWatchdog:
    """Start with :meth:`start` from the loop's thread (the main thread); :meth:`stop` at the end.

    ``track``/``untrack`` tell it each running task and its timeout.

    The thread looks at the loop every :data:`_CHECK` seconds while tasks run, and less often
    while none does, and each look that found the loop free sends it a ping
    (``call_soon_threadsafe``): the loop is blocked for as long as a ping has waited. An idle
    worker so wakes only when looked at, not on a timer of its own between looks.
    """

    def __init__(
        self,
        *,
        warn_after: float = 1.0,
        exit_after: float = 30.0,
        interrupt_grace: float = 3.0,
        exit: Callable[[int], object] | None = None,
        sidecar: Sidecar | None = None,
        pending_reports: Callable[[], list[Report]] | None = None,
    ) -> None:
        self._sidecar = sidecar
        self.pending_reports = pending_reports
        self.warn_after = warn_after
        self.exit_after = exit_after
        self.interrupt_grace = interrupt_grace
        self._exit = exit or os._exit
        self._deadlines: dict[str, tuple[float, float]] = {}
        self._sent = 0
        self._answered = 0
        self._sent_at = time.monotonic()
        self._stopping = False
        self._wake = threading.Event()
        self._next_look = math.inf
        """When the thread looks next at the latest (set before it reads ``_deadlines``)."""
        self._starts = 0
        """Tasks tracked so far: the thread looks at the usual pace while tasks start."""
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._main = threading.main_thread().ident
        self._interrupting: float | None = None
        self._interrupted_at = 0.0
        self._previous_handler: object = None
        self._armed_at = 0.0
        self.stalls = 0

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._sent, self._sent_at = 1, time.monotonic()  # the first ping: a loop blocked from now on is seen
        self._loop.call_soon(self._pong, 1)
        if threading.current_thread() is threading.main_thread():
            self._previous_handler = signal.signal(signal.SIGUSR1, self._on_signal)
        self._arm_frozen_exit()
        self._thread = threading.Thread(target=self._watch, name="loop-watchdog", daemon=True)
        self._thread.start()

    @property
    def frozen_after(self) -> float:
        """Seconds without a re-arm after which faulthandler ends the worker."""
        return self.exit_after + self.interrupt_grace + FROZEN_MARGIN

    def _arm_frozen_exit(self) -> None:
        self._armed_at = time.monotonic()
        faulthandler.dump_traceback_later(self.frozen_after, exit=True)

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(1.0)
        faulthandler.cancel_dump_traceback_later()
        if self._previous_handler is not None:
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(signal.SIGUSR1, self._previous_handler)  # type: ignore[arg-type]

    def track(self, task_id: str, timeout: float | None) -> None:
        """A task started (``timeout``: seconds, or None for none)."""
        self._starts += 1
        if not self._deadlines and self._next_look - time.monotonic() > _CHECK:
            # The thread waits out an idle pause: look at the usual pace. Not at every task's
            # start (a thread wake-up each, most of a function task's own cost in the profile).
            self._wake.set()
        if timeout is None:
            self._deadlines[task_id] = (math.inf, math.inf)
        else:
            self._deadlines[task_id] = (time.monotonic() + timeout, timeout)

    def untrack(self, task_id: str) -> None:
        self._deadlines.pop(task_id, None)

    # --- the loop's side -------------------------------------------------------------------------

    def _pong(self, ping: int) -> None:
        self._answered = ping
        self._interrupting = None

    def _on_signal(self, signum: int, frame: object) -> None:
        blocked = time.monotonic() - self._sent_at
        if self._interrupting is None:
            return  # not ours to act on
        raise LoopBlockedError(
            f"this step blocked the worker's event loop for {blocked:.1f} s (a blocking call in async "
            f"code? await asyncio.sleep, or run it with asyncio.to_thread), past a task's timeout of "
            f"{self._interrupting:g} s: it was interrupted"
        )

    # --- the thread ------------------------------------------------------------------------------

    def _watch(self) -> None:
        try:
            self._watching()
        finally:
            faulthandler.cancel_dump_traceback_later()  # nobody re-arms it any more
            if self._sidecar is not None:
                self._sidecar.close()

    def _speak_for_the_loop(self) -> None:
        assert self._sidecar is not None
        self._sidecar.keepalive()
        for topic, payload, msg_id, key in self.pending_reports() if self.pending_reports else ():
            if not self._sidecar.publish(topic, payload, msg_id=msg_id, key=key):
                log.warning("could not publish a report for the blocked loop (%s)", msg_id)

    def _blocked(self, now: float) -> float:
        """Seconds the loop has been blocked (0 when it answered the last ping: then ping again)."""
        if self._answered != self._sent:
            return now - self._sent_at
        assert self._loop is not None
        self._sent += 1
        self._sent_at = now
        try:
            self._loop.call_soon_threadsafe(self._pong, self._sent)
        except RuntimeError:  # the loop was closed: the worker is ending
            self._stopping = True
        return 0.0

    def _watching(self) -> None:
        warned = False
        starts_seen = 0
        idle_check = min(_IDLE_CHECK, self.warn_after / 2)
        while True:
            # _next_look first: a task tracked after the thread found none wakes it (see track);
            # while tasks start (one at a time, say) it looks at the usual pace, unwoken.
            self._next_look = time.monotonic() + idle_check
            busy = bool(self._deadlines) or self._starts != starts_seen
            starts_seen = self._starts
            pause = _CHECK if busy else idle_check
            self._next_look = time.monotonic() + pause
            self._wake.wait(pause)
            self._wake.clear()
            if self._stopping:
                return
            now = time.monotonic()
            if now - self._armed_at >= _REARM_EVERY:
                self._arm_frozen_exit()
            if output_full():
                # Nobody reads this worker's output (the server is stopped, Ctrl-Z'd, in a
                # debugger): the loop waits on a write, not on user code, and a line from here
                # would wait too. Its clock starts again once the output moves.
                self._sent_at = now
                continue
            blocked = self._blocked(now)
            if blocked >= _VOUCH_AFTER and self._sidecar is not None:
                self._speak_for_the_loop()
            if blocked < self.warn_after:
                warned = False
                continue
            if not warned:
                warned = True
                self.stalls += 1
                log.warning("the event loop has been blocked for %.1f s%s", blocked, self._where())
            overdue = [t for deadline, t in tuple(self._deadlines.values()) if deadline <= now]
            if overdue and self._interrupting is None:
                self._interrupting = min(overdue)
                self._interrupted_at = now
                log.error(
                    "a task passed its timeout of %g s while the loop is blocked: interrupting", min(overdue)
                )
                os.kill(os.getpid(), signal.SIGUSR1)
            elif self._interrupting is not None and now - self._interrupted_at > self.interrupt_grace:
                self._end(f"the interrupt did not free the event loop within {self.interrupt_grace:g} s")
            elif blocked > self.exit_after:
                self._end(f"the event loop was blocked for {blocked:.0f} s")

    def _end(self, why: str) -> None:
        log.error("%s%s: stopping this worker (a new one takes its place)", why, self._where())
        for handler in logging.getLogger().handlers:
            with contextlib.suppress(Exception):
                handler.flush()
        declare_exit(EXIT_STALLED)
        self._exit(EXIT_STALLED)

    def _where(self) -> str:
        frame = sys._current_frames().get(self._main or 0)
        if frame is None:
            return ""
        frames = traceback.extract_stack(frame)
        user = [
            f
            for f in frames
            if "site-packages" not in f.filename
            and "/asyncio/" not in f.filename
            and not str(Path(f.filename).resolve()).startswith(_OURS)
        ]
        shown = (user or frames)[-3:]
        return " at " + " <- ".join(f"{f.filename}:{f.lineno} in {f.name}" for f in reversed(shown))
