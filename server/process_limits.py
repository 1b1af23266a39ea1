"""Raising the process's limit on open files to what the system allows, once at start.

Every HTTP connection, worker link and state file takes a descriptor, and shells and service
managers often start programs with a soft limit of 1,024 (or less) under a hard limit a hundred
times higher: the soft one is the program's to raise (as Go's runtime, nginx and systemd's advice
do). Under a limit too low to start, the failure would come late and unclear: a port reported
taken, a journal reported unwritable, or libzmq aborting the process (``Too many open files
(src/epoll.cpp:38)``). So the entry points (`llamactl serve`, `llamactl worker`) call
:func:`raise_open_files_limit` first, and it refuses to go on below :data:`MIN_OPEN_FILES`.

The worker processes inherit the raised limit. Python's ``select.select`` refuses descriptors
above 1,023 with a ValueError rather than overrunning, so the raise cannot make user code unsafe
that would not have hit the old limit first.
"""

from __future__ import annotations

from llamactl.server.errors import TooFewOpenFiles

__all__ = ["MIN_OPEN_FILES", "raise_open_files_limit"]

MIN_OPEN_FILES = 128
"""Below this a server cannot start a few services and still take connections: one service's
server holds ~45 descriptors before its first request, and each further service ~2 more."""

_UNBOUNDED_TARGET = 1 << 20  # what to ask for when the hard limit is "unlimited" (macOS)


def raise_open_files_limit(needed: int = MIN_OPEN_FILES) -> int:
    """Raise the soft limit on open files to the hard one; return the limit now in force.

    Raises:
        TooFewOpenFiles: even the hard limit is below ``needed``.
    """
    try:
        import resource  # noqa: PLC0415  (no such module on Windows)
    except ImportError:  # pragma: no cover - not on Windows
        return needed
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _UNBOUNDED_TARGET if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        for wanted in (target, 10_240):  # 10,240: macOS's OPEN_MAX, when "unlimited" is refused
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            except (ValueError, OSError):
                continue
            soft = wanted
            break
    if soft != resource.RLIM_INFINITY and soft < needed:
        raise TooFewOpenFiles(soft, needed)
    return soft
