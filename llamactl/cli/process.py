"""How a long-running command (`llamactl serve`, `llamactl worker`) sets up its own process
before it starts: standard streams that exist, an open-file limit it can live with, the fastest
event loop there is."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llamactl.cli.common import fail
from llamactl.cli.exit_codes import ExitCode

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable

__all__ = ["fast_loop_factory", "open_standard_streams", "prepare_process"]


def prepare_process() -> None:
    """:func:`open_standard_streams`, then raise the open-file limit to the hard one; exit with
    an Error that says how to raise it when even the hard limit is too low to serve."""
    from llamactl.server.errors import TooFewOpenFiles
    from llamactl.server.process_limits import raise_open_files_limit

    open_standard_streams()
    try:
        raise_open_files_limit()
    except TooFewOpenFiles as exc:
        fail(str(exc), None, ExitCode.ERROR)


def fast_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when it is installed (several times cheaper per request and per
    socket event than asyncio's own), else the default loop."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def open_standard_streams() -> None:
    """Put /dev/null on any of fds 0-2 that is closed (`llamactl serve >&-`, some daemonizers),
    and a file object on ``sys.stdin``/``stdout``/``stderr`` where Python left None.

    Else the next socket takes the closed number and libuv aborts the process when it closes
    it (``uv__close: Assertion `fd > STDERR_FILENO' failed``), and uvicorn's log setup fails on
    ``sys.stdout.isatty()``.
    """
    import os
    import sys

    for fd, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)  # the lowest free number: this one
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
        if getattr(sys, name) is None:
            setattr(sys, name, open(fd, mode, closefd=False))  # noqa: SIM115  (lives as long as the process)
