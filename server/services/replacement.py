"""When a worker should make way for a fresh process: what it holds can only be freed by ending it.

Two things grow in a worker that no task's end gives back: calls still running after their
tasks timed out or were cancelled (Python cannot stop a thread, and each sync call holds one;
async code that goes on when cancelled is left running too), and memory that the service's code
keeps (a cache without a bound, a leak). A worker past either limit takes no new task and is
replaced once its running tasks end (:class:`Worker` does that; this module only says whether,
and why).
"""

from __future__ import annotations

import logging
import os
import sys

from llamactl.server.services.spec import WorkerSpec
from llamactl.server.sizes import show_size

from .stopping import abandoned_runs
from .threads import abandoned_calls

__all__ = ["ABANDONED_CALLS_LIMIT", "REPLACE_GRACE", "ReplaceCheck", "resident_bytes"]

ABANDONED_CALLS_LIMIT = 8
"""Calls still running after their tasks ended (at least ``max-concurrency``) past which a worker
is replaced: a sync function cannot be stopped, and each such call holds a thread (and whatever it
is doing) until the process ends; async code that goes on when cancelled counts the same."""
REPLACE_GRACE = 60.0
"""Seconds a worker being replaced gives its running tasks to end; those still running then are
stopped and run again (uncounted) on the fresh worker."""

log = logging.getLogger(__name__)

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _abandoned() -> int:
    """Calls of the process still running after their tasks ended: sync calls, and async runs
    whose code did not stop when cancelled."""
    return abandoned_calls() + abandoned_runs()


def resident_bytes() -> int | None:
    """The memory this process holds now (its resident set), or ``None`` where it cannot be read.

    Linux: the current figure (``/proc/self/statm``). Elsewhere the peak so far, which never
    falls: a limit on it still bounds the process, if sooner.
    """
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource  # noqa: PLC0415  (no such module on Windows)
    except ImportError:  # pragma: no cover - not on Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere


class ReplaceCheck:
    """Says why a worker of ``spec`` should be replaced, if it should (see the module's doc)."""

    def __init__(self, spec: WorkerSpec) -> None:
        self._abandoned_before = _abandoned()
        """Abandoned calls of the process when the worker began (0 but in a test process)."""
        self._max_abandoned = max(ABANDONED_CALLS_LIMIT, spec.max_concurrency)
        self._max_memory = spec.max_memory
        self._ran = False
        if spec.max_memory is not None and (held := resident_bytes()) is not None and held > spec.max_memory:
            log.warning(
                "this worker holds %s with its code loaded, over its service's max-memory of %s: "
                "it is replaced after every task; raise max-memory above what the code needs",
                show_size(held),
                show_size(spec.max_memory),
            )

    def task_ended(self) -> None:
        """A task of the worker ended: from now on, memory over the limit is what tasks kept (a
        fresh worker holds less), not what loading the code takes (a fresh one would too)."""
        self._ran = True

    def reason(self) -> str | None:
        """Why the worker should be replaced now, or ``None``."""
        abandoned = _abandoned() - self._abandoned_before
        if abandoned > self._max_abandoned:
            return (
                f"{abandoned} calls still run after their tasks ended (timed out or cancelled: "
                "a sync function cannot be stopped, and each holds a thread; nor can async code "
                "that goes on when cancelled)"
            )
        limit = self._max_memory
        if self._ran and limit is not None and (held := resident_bytes()) is not None and held > limit:
            return (
                f"it holds {show_size(held)} of memory, over its service's max-memory of "
                f"{show_size(limit)} (what the service's code keeps between tasks grows)"
            )
        return None
