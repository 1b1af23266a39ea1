"""``python -P -m llamactl.server.services``: run one service worker from ``LLAMACTL_WORKER_SPEC``.

``-P`` keeps the current folder (a service's source folder) off ``sys.path``: a user's own
``server.py`` or ``tui.py`` never shadows a module of ours, and ours never shadow theirs.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable

from llamactl.server.services.process import configure_logging, run_worker
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
        code = runner.run(run_worker(spec))
    sys.exit(code)


if __name__ == "__main__":
    main()
