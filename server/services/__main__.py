"""``python -P -m llamactl.server.services``: run one service worker from ``LLAMACTL_WORKER_SPEC``.

Started ahead by ``llamactl serve`` (``LLAMACTL_PRESTARTED``), it imports what follows, then
waits for its environment, spec included, on stdin (:mod:`llamactl.server.supervisor.prestart`).

``-P`` keeps the current folder (a service's source folder) off ``sys.path``: a user's own
``server.py`` or ``tui.py`` never shadows a module of ours, and ours never shadow theirs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable

from llamactl.server.services.errorinfo import error_line
from llamactl.server.services.process import EXIT_ESCAPED, configure_logging, run_worker
from llamactl.server.services.spec import WorkerSpec
from llamactl.server.stack_dumps import print_stacks_on_signal
from llamactl.server.supervisor.exit_note import claim_exit_note, declare_exit
from llamactl.server.supervisor.prestart import await_start


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop  # noqa: PLC0415  (optional speed-up)
    except ImportError:
        return None
    return uvloop.new_event_loop


EXIT_GRACE = 5.0
"""Seconds a worker that stopped gives its process to end (user code's atexit handlers, threads
that are not daemons, tasks that ignore their cancel) before it leaves without them."""

log = logging.getLogger("llamactl.server.services")


def _leave_within(code: int, seconds: float) -> None:
    """End the process with ``code`` in ``seconds`` if it has not ended by then.

    The worker has stopped (its tasks ended, the queue closed), but Python ends a process only
    once every thread that is not a daemon has (a library's poller, a user's executor) and once
    the tasks left on the loop take their cancel: one that never does kept the worker alive
    until its stop grace ran out and it was killed, at every stop and every reload.
    """

    def leave() -> None:
        time.sleep(seconds)
        threads = [t.name for t in threading.enumerate() if not t.daemon and t is not threading.main_thread()]
        log.warning(
            "the worker stopped, but its process did not end within %gs (%s): leaving without them",
            seconds,
            f"threads that are not daemons still run: {', '.join(threads)}"
            if threads
            else "a task of the service's code does not take its cancel, or an atexit handler hangs",
        )
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # closed by user code: nothing left to say
                stream.flush()
        os._exit(code)  # declared already (main)

    threading.Thread(target=leave, name="exit-deadline", daemon=True).start()


def main() -> None:
    """Read the WorkerSpec from the environment, run the worker, exit with its code."""
    print_stacks_on_signal()
    claim_exit_note()
    if not await_start():  # started ahead by `llamactl serve`, and not needed after all
        sys.exit(0)
    spec = WorkerSpec.from_env()
    configure_logging(spec)
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        try:
            code = runner.run(run_worker(spec))
        except BaseException as exc:
            # The event loop ended without a stop being asked: user code raised SystemExit or
            # KeyboardInterrupt outside a task's run (in its run, they fail the task), stopped the
            # loop, or cancelled the worker's own tasks. Leave at once: stopping in order would
            # tell the queue that the worker stopped on purpose, and what it held would run again
            # uncounted, and end the next worker the same way, for ever; left like this, it
            # counts as a crash.
            logging.getLogger("llamactl.server.services").error(
                "the worker's event loop ended without a stop being asked (%s; user code that stops "
                "the loop, cancels the worker's own tasks or raises SystemExit outside a task does "
                "this): the worker leaves, and its tasks count as failed",
                error_line(exc),
            )
            declare_exit(EXIT_ESCAPED)
            os._exit(EXIT_ESCAPED)
        # An exit of the service's code from here on (an atexit handler's os._exit) is its own.
        declare_exit(code)
        _leave_within(code, EXIT_GRACE)  # from here on, the loop's leftovers are cancelled
    sys.exit(code)


if __name__ == "__main__":
    main()
