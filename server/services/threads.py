"""Run blocking user code off the event loop, in threads that never hold the process hostage."""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import contextvars
import functools
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = [
    "EXECUTOR_CALL_LIMIT",
    "Call",
    "DaemonExecutor",
    "DaemonThreadPool",
    "Job",
    "abandoned_calls",
    "run_in_daemon_thread",
]

T = TypeVar("T")
Done = Callable[[], None]
Job = Callable[[], Done]
"""A call: runs in a pool thread and returns what to do once the thread is free again."""

IDLE_SECONDS = 30.0
"""How long a pool thread waits for another call before it exits."""


class Call:
    """One call's state, kept by the pool: whether it returned, whether its caller gave up on it."""

    __slots__ = ("abandoned", "returned")

    def __init__(self) -> None:
        self.returned = False
        self.abandoned = False


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
        self._abandoned = 0

    @property
    def threads(self) -> int:
        """Threads alive now (busy or idle)."""
        return self._threads

    @property
    def abandoned(self) -> int:
        """Calls whose caller stopped waiting (a task timed out or was cancelled) that still run,
        each holding a thread that nothing can stop but the end of the process."""
        return self._abandoned

    def returned(self, call: Call) -> None:
        """``call`` returned (from its thread)."""
        with self._lock:
            call.returned = True
            if call.abandoned:
                self._abandoned -= 1

    def abandon(self, call: Call) -> None:
        """Its caller stopped waiting for ``call``: counted in :attr:`abandoned` until it returns."""
        with self._lock:
            if not call.returned and not call.abandoned:
                call.abandoned = True
                self._abandoned += 1

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
        try:
            threading.Thread(
                target=self._serve, args=(inbox,), name=f"{self._name}-call", daemon=True
            ).start()
        except BaseException:  # "can't start new thread": the caller hears of it; no thread to count
            with self._lock:
                self._threads -= 1
            raise

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


def _raisable(exc: BaseException) -> BaseException:
    """``exc`` as a future may hold it: asyncio refuses a StopIteration (a ``TypeError`` in the
    callback that hands it over, and the awaiting task waits for ever), so it becomes the
    RuntimeError a coroutine's own StopIteration becomes."""
    if type(exc) is not StopIteration:
        return exc
    error = RuntimeError("a sync call raised StopIteration")
    error.__cause__ = exc
    return error.with_traceback(exc.__traceback__)


async def run_in_daemon_thread(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Await ``fn(*args, **kwargs)`` run in a daemon thread of the process's pool.

    Not ``asyncio.to_thread``: its executor threads are joined at loop and interpreter shutdown,
    so one sync function that never returns (after its task timed out or was cancelled) would keep
    the worker from exiting. Cancelling the await abandons the call; it cannot be interrupted.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()
    ctx = contextvars.copy_context()
    call = Call()

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
            outcome: tuple[bool, Any] = (False, _raisable(exc))
        else:
            outcome = (True, result)
        _POOL.returned(call)

        def done() -> None:
            # RuntimeError: the loop is closed, nobody is waiting any more
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(deliver, *outcome)

        return done

    _POOL.submit(job)
    try:
        return await future
    except asyncio.CancelledError:
        _POOL.abandon(call)
        raise


def abandoned_calls() -> int:
    """Sync calls of this process still running after their caller stopped waiting for them."""
    return _POOL.abandoned


EXECUTOR_CALL_LIMIT = 64
"""Calls the worker's default executor runs at once, besides those whose callers gave up on
them (at least the service's ``max-concurrency``): a task that hands it thousands of calls at
once (``gather`` over ``to_thread``) gets them run that many at a time, as asyncio's own
executor would (it has ``min(32, cpus + 4)`` threads), not a thread each."""


class _CallFuture(concurrent.futures.Future[Any]):
    """A future whose cancel, once its call runs, counts the call as abandoned (asyncio cancels
    the future of ``run_in_executor`` when its awaiter is cancelled) and frees its place."""

    def __init__(self, executor: DaemonExecutor) -> None:
        super().__init__()
        self.call = Call()
        self.released = False
        """Its place among the executor's running calls was given up (guarded by its lock)."""
        self._executor = executor

    def cancel(self) -> bool:
        if super().cancel():
            return True  # not started: it never will (its job frees its place, unrun)
        if not self.done():
            _POOL.abandon(self.call)
            self._executor.release(self)
        return False


class DaemonExecutor(concurrent.futures.ThreadPoolExecutor):
    """The worker's default executor (``loop.run_in_executor(None, ...)``, where the workflows
    library runs a sync step), on the process's daemon pool: a call that never returns holds no
    thread of a small fixed set (asyncio's default has ``min(32, cpus + 4)``: a few stuck steps
    and every sync step after them waits for ever), does not keep the worker from exiting, and
    counts in :func:`abandoned_calls` once its caller stopped waiting. It runs ``limit`` calls
    at once; the calls its callers gave up on do not count, so stuck ones cannot hold it."""

    def __init__(self, limit: int = EXECUTOR_CALL_LIMIT) -> None:
        super().__init__(max_workers=1)  # its own threads are never started: submit is ours
        self._limit = limit
        self._lock = threading.Lock()
        self._running = 0
        """Calls started whose place is not given up yet (neither returned nor abandoned)."""
        self._waiting: collections.deque[tuple[Job, _CallFuture]] = collections.deque()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[T]:
        future = _CallFuture(self)

        def job() -> Done:
            if future.set_running_or_notify_cancel():
                try:
                    result = fn(*args, **kwargs)
                except BaseException as exc:
                    future.set_exception(_raisable(exc))  # asyncio copies it into its own future
                else:
                    future.set_result(result)
                finally:
                    _POOL.returned(future.call)
            # Once this thread is idle again: the next waiting call then runs on it.
            return functools.partial(self.release, future)

        with self._lock:
            if self._running >= self._limit:
                self._waiting.append((job, future))
                return future
            self._running += 1
        try:
            _POOL.submit(job)
        except RuntimeError:  # "can't start new thread": the caller hears of it
            self.release(future)
            raise
        return future

    def release(self, future: _CallFuture) -> None:
        """``future``'s call returned, or its caller gave up on it: its place goes to the next
        waiting call (once per call)."""
        following = self._next_after(future)
        while following is not None:
            job, waiting = following
            try:
                _POOL.submit(job)
                return
            except RuntimeError as exc:  # "can't start new thread": the system's limit on threads
                if waiting.set_running_or_notify_cancel():
                    waiting.set_exception(exc)
                following = self._next_after(waiting)

    def _next_after(self, future: _CallFuture) -> tuple[Job, _CallFuture] | None:
        with self._lock:
            if future.released:
                return None
            future.released = True
            if not self._waiting:
                self._running -= 1
                return None
            return self._waiting.popleft()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Nothing to wait for: the pool's threads are daemons, and leave with the process."""
