"""Run blocking user code off the event loop, in threads that never hold the process hostage."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["DaemonThreadPool", "Job", "run_in_daemon_thread"]

T = TypeVar("T")
Done = Callable[[], None]
Job = Callable[[], Done]
"""A call: runs in a pool thread and returns what to do once the thread is free again."""

IDLE_SECONDS = 30.0
"""How long a pool thread waits for another call before it exits."""


class DaemonThreadPool:
    """Daemon threads reused from one call to the next (starting a thread per call costs more
    than a short sync function), started as calls need them and gone after ``idle`` seconds
    without work. Not a ``concurrent.futures`` executor: those join their threads at interpreter
    exit, so one call that never returns would keep the worker from exiting. A thread stuck in a
    call is simply never reused; the next call gets another thread.
    """

    def __init__(self, idle: float = IDLE_SECONDS, name: str = "user") -> None:
        self._idle_seconds = idle
        self._name = name
        self._lock = threading.Lock()
        self._idle: list[queue.SimpleQueue[Job]] = []
        """The inboxes of the threads waiting for work, most recently idle last."""
        self._threads = 0

    @property
    def threads(self) -> int:
        """Threads alive now (busy or idle)."""
        return self._threads

    def submit(self, job: Job) -> None:
        """Run ``job`` on an idle thread, or on a new one when none is idle; then the callable it
        returned, once the thread is idle again (so a caller that waits for that callable and
        submits the next call finds the same thread free)."""
        with self._lock:
            if self._idle:
                self._idle.pop().put(job)
                return
            self._threads += 1
        inbox: queue.SimpleQueue[Job] = queue.SimpleQueue()
        inbox.put(job)
        threading.Thread(target=self._serve, args=(inbox,), name=f"{self._name}-call", daemon=True).start()

    def _serve(self, inbox: queue.SimpleQueue[Job]) -> None:
        job: Job | None = inbox.get()
        while job is not None:
            done = job()
            job = None  # drop the finished call's references before waiting
            with self._lock:
                self._idle.append(inbox)
            done()
            del done
            try:
                job = inbox.get(timeout=self._idle_seconds)
            except queue.Empty:
                with self._lock:
                    if inbox in self._idle:
                        self._idle.remove(inbox)
                        self._threads -= 1
                        return
                # submit() took this inbox just as the wait ended: its job is on the way.
                job = inbox.get()


_POOL = DaemonThreadPool()


async def run_in_daemon_thread(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Await ``fn(*args, **kwargs)`` run in a daemon thread of the process's pool.

    Not ``asyncio.to_thread``: its executor threads are joined at loop and interpreter shutdown,
    so one sync function that never returns (after its task timed out or was cancelled) would keep
    the worker from exiting. Cancelling the await abandons the call; it cannot be interrupted.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()
    ctx = contextvars.copy_context()

    def deliver(ok: bool, value: Any) -> None:
        if future.done():
            return
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)

    def job() -> Done:
        try:
            result = ctx.run(fn, *args, **kwargs)
        except BaseException as exc:
            outcome: tuple[bool, Any] = (False, exc)
        else:
            outcome = (True, result)

        def done() -> None:
            # RuntimeError: the loop is closed, nobody is waiting any more
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(deliver, *outcome)

        return done

    _POOL.submit(job)
    return await future
