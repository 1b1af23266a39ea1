"""``python -P -m llamactl.server.services``: run one service worker from ``LLAMACTL_WORKER_SPEC``.

``-P`` keeps the current folder (a service's source folder) off ``sys.path``: a user's own
``server.py`` or ``tui.py`` never shadows a module of ours, and ours never shadow theirs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Callable

from llamactl.server.services.errorinfo import error_line
from llamactl.server.services.process import EXIT_ESCAPED, configure_logging, run_worker
from llamactl.server.services.spec import WorkerSpec


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop  # noqa: PLC0415  (optional speed-up)
    except ImportError:
        return None
    return uvloop.new_event_loop


def main() -> None:
    """Read the WorkerSpec from the environment, run the worker, exit with its code."""
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
            os._exit(EXIT_ESCAPED)
    sys.exit(code)


if __name__ == "__main__":
    main()
