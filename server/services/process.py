"""The worker process around :class:`Worker`: environment, logging, loading, signals, parent watch.

Exit codes: 0 after a clean stop (SIGTERM/SIGINT, or the parent process went away), 6 after one
it asked for itself, to be replaced by a fresh process (see :mod:`.replacement`), 2 when the
message queue cannot be reached, 3 when the service's target cannot be loaded (after publishing
replica.failed with the reason), 4 when user code kept the event loop blocked (see
:mod:`.watchdog`), 5 when the event loop ended without a stop being asked (user code raised
``SystemExit`` or ``KeyboardInterrupt`` outside a task's run, stopped the loop or cancelled the
worker's own tasks: see ``__main__``; within a run the first two fail the task: :mod:`.containment`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llamactl.server.errors import WorkflowLoadError
from llamactl.server.mq.base import MessageQueue
from llamactl.server.mq.factory import connect_queue
from llamactl.server.protocol import WorkerMessageKind
from llamactl.server.services.spec import WorkerSpec
from llamactl.server.stack_dumps import also_on_the_loop

from .adapters import Runnable, adapt
from .errorinfo import error_line, traceback_summary
from .execution import where_running
from .loader import load_target
from .reporter import Reporter
from .threads import EXECUTOR_CALL_LIMIT, DaemonExecutor
from .watchdog import EXIT_STALLED, LoopWatchdog
from .worker import Worker

__all__ = [
    "EXIT_ESCAPED",
    "EXIT_LOAD_FAILED",
    "EXIT_MQ_FAILED",
    "EXIT_REPLACE",
    "EXIT_STALLED",
    "configure_logging",
    "run_worker",
]

log = logging.getLogger("llamactl.server.services")

EXIT_MQ_FAILED = 2
EXIT_LOAD_FAILED = 3
EXIT_ESCAPED = 5
EXIT_REPLACE = 6  # the supervisor's EXIT_REPLACE: restarted at once, not counted as a crash
PARENT_POLL_INTERVAL = 1.0
SIGNAL_CHECK_INTERVAL = 1.0
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

Connect = Callable[[dict[str, Any]], MessageQueue]


def configure_logging(spec: WorkerSpec, level: int = logging.INFO) -> None:
    """Log to stderr, every line prefixed with the replica id."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s [{spec.replica_id}] %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def _parent_alive(pid: int) -> bool:
    if os.getppid() == pid:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def _watch_parent(pid: int, worker: Worker) -> None:
    while _parent_alive(pid):  # noqa: ASYNC110  (another process: nothing to await but time)
        await asyncio.sleep(PARENT_POLL_INTERVAL)
    log.warning("parent process %d is gone: stopping", pid)
    worker.request_stop()


async def _keep_stop_signals(on_signal: Callable[[], None]) -> None:
    """Put the worker's SIGTERM and SIGINT handlers back when user code replaced them (a
    ``signal.signal`` in a task, or in a library it calls): a worker deaf to SIGTERM cannot stop
    in order, so every stop and reload would wait out its grace and kill it."""
    loop = asyncio.get_running_loop()
    ours = {sig: signal.getsignal(sig) for sig in _STOP_SIGNALS}
    while True:
        await asyncio.sleep(SIGNAL_CHECK_INTERVAL)
        for sig, handler in ours.items():
            if signal.getsignal(sig) is not handler:
                log.warning(
                    "user code replaced the worker's %s handler: put back (a worker's stop and "
                    "reload signals are its own)",
                    sig.name,
                )
                loop.add_signal_handler(sig, on_signal)
                ours[sig] = signal.getsignal(sig)


def _say_where_tasks_are() -> None:
    """On SIGUSR2, after every thread's stack: where each running task's code is."""
    running = where_running()
    if not running:
        log.warning("no task running here")
    for label, at, stacks in running:
        log.warning("%s runs%s%s", label, at, f"\n{stacks}" if stacks else "")


def _hold_stop_signals() -> None:
    """Before a fork, in the forking thread: SIGTERM and SIGINT wait (blocked) until each side
    has its own handling of them. A child the machine was slow to schedule could otherwise take
    a SIGTERM (``Pool.terminate`` right after a quick ``map``) with the worker's handlers still
    in place, lose it, and never stop: its pool's ``join`` then blocked the worker for good."""
    _held.mask = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)


def _release_stop_signals() -> None:
    """After a fork, in the parent: what arrived meanwhile is delivered now."""
    mask, _held.mask = getattr(_held, "mask", None), None
    if mask is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _forget_stop_signals() -> None:
    """In a process forked from the worker (a ``multiprocessing`` fork pool, ``os.fork``): the
    worker's stop handling is not the child's. The loop's handlers write each signal to a wakeup
    socket the child shares with the worker, and ignore it otherwise: so a SIGTERM to the child
    (``Pool.terminate`` sends one to each of its processes) stopped the worker instead, and left
    the child running. A signal sent before this ran waited, blocked, and is delivered now."""
    try:
        with contextlib.suppress(ValueError, OSError):
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
    finally:
        _release_stop_signals()


_held = threading.local()
"""The forking thread's signal mask from before the fork (see :func:`_hold_stop_signals`)."""
_fork_hook_registered = False


def _register_fork_hook() -> None:
    global _fork_hook_registered  # noqa: PLW0603  (an at-fork hook cannot be taken back: once)
    if not _fork_hook_registered and hasattr(os, "register_at_fork"):
        os.register_at_fork(
            before=_hold_stop_signals,
            after_in_parent=_release_stop_signals,
            after_in_child=_forget_stop_signals,
        )
        _fork_hook_registered = True


def load_runnable(spec: WorkerSpec) -> Runnable:
    """Import and adapt the spec's target; any failure is a WorkflowLoadError."""
    label = f"service {spec.service_id!r} target {spec.import_path!r}"
    try:
        return adapt(load_target(Path(spec.source_dir), spec.import_path), label=label)
    except WorkflowLoadError:
        raise
    except Exception as exc:
        raise WorkflowLoadError(f"{label}: {error_line(exc)}") from exc


async def run_worker(spec: WorkerSpec, *, connect: Connect | None = None) -> int:
    """Run a worker for ``spec`` until it is told to stop; return the process exit code.

    The service's code is imported before the queue is reached: an import blocks the event loop
    for as long as it takes (seconds for a heavy library), and a line to the broker opened before
    it would be refused for its silence (no hello, no heartbeat) before the import ends.
    """
    os.environ.update(spec.env)
    # Sync code the loop runs in its default executor (a workflow's sync steps) gets daemon threads.
    executor = DaemonExecutor(limit=max(EXECUTOR_CALL_LIMIT, spec.max_concurrency))
    asyncio.get_running_loop().set_default_executor(executor)
    log.info(
        "worker %s of %s/%s generation %d pid %d: loading %s from %s",
        spec.replica_id,
        spec.deployment,
        spec.service_id,
        spec.generation,
        os.getpid(),
        spec.import_path,
        spec.source_dir,
    )
    load_failure: WorkflowLoadError | None = None
    try:
        runnable = load_runnable(spec)
        # Everything imported so far lives as long as the process: keep the collector from
        # walking it again and again while tasks churn through short-lived objects.
        gc.freeze()
        gc.set_threshold(10_000, 20, 20)  # fewer young collections under load
    except WorkflowLoadError as exc:
        log.error("%s", exc)
        load_failure = exc
    try:
        queue = (connect or connect_queue)(spec.mq)
        await queue.start()
    except Exception as exc:
        log.error("cannot reach the message queue: %s", error_line(exc))
        return EXIT_MQ_FAILED
    if load_failure is not None:
        await _report_load_failure(spec, queue, load_failure)
        code = EXIT_LOAD_FAILED
    else:
        # What ends this with an exception is not a stop on purpose (user code cancelled the
        # worker's own tasks, say): then no orderly close, which would give back what the worker
        # holds uncounted, to end the next worker the same way. The process leaves without it
        # (``__main__``), and the queue counts a crash.
        code = await _serve(spec, queue, runnable)
    with contextlib.suppress(Exception):
        await queue.close()
    return code


async def _report_load_failure(spec: WorkerSpec, queue: MessageQueue, exc: WorkflowLoadError) -> None:
    reporter = Reporter(spec, queue)
    failed = reporter.message(
        WorkerMessageKind.REPLICA_FAILED,
        error=str(exc),
        traceback=traceback_summary(exc.__cause__) if exc.__cause__ else None,
    )
    try:
        await reporter.publish(failed)
    except Exception as pub_exc:
        log.error("could not report the failure: %s", error_line(pub_exc))


async def _serve(spec: WorkerSpec, queue: MessageQueue, runnable: Runnable) -> int:
    # Blocked well past its lease, a worker's tasks have gone to others: it is of no use any more.
    watchdog = LoopWatchdog(exit_after=spec.lease + 5.0, sidecar=queue.sidecar())
    worker = Worker(spec, queue, runnable, watchdog=watchdog)
    watchdog.pending_reports = worker.unsent_started_reports
    watchdog.start()
    loop = asyncio.get_running_loop()
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            log.info("signal received: finishing %d in-flight task(s)", worker.in_flight)
            worker.request_stop()
        else:
            log.warning("second signal: abandoning %d in-flight task(s)", worker.in_flight)
            worker.abort()

    _register_fork_hook()
    for sig in _STOP_SIGNALS:
        loop.add_signal_handler(sig, on_signal)
    also_on_the_loop(loop, _say_where_tasks_are)
    watcher = asyncio.create_task(_watch_parent(spec.parent_pid, worker)) if spec.parent_pid else None
    keeper = asyncio.create_task(_keep_stop_signals(on_signal))
    try:
        await worker.publish(worker.message(WorkerMessageKind.REPLICA_UP, concurrency_limit=worker.limit))
        log.info("up: %s target, max concurrency %d", runnable.kind, spec.max_concurrency)
        await worker.serve()
    finally:
        watchdog.stop()
        for sig in _STOP_SIGNALS:
            loop.remove_signal_handler(sig)
        helpers = {keeper} if watcher is None else {keeper, watcher}
        for helper in helpers:
            helper.cancel()
        await asyncio.wait(helpers)
    log.info("stopped")
    return EXIT_REPLACE if worker.replacing else 0
