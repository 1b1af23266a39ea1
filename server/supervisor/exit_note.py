"""How a child tells its supervisor that it exits with a code on purpose.

A worker's exit codes mean something to the supervisor (3: its code does not load; 6: replace
me), but the service's code runs in the same process and may end it with any code:
``sys.exit(3)`` or ``os._exit(6)`` in a task looked like a load error, or like a worker asking
to be replaced, which is restarted silently and not counted as a crash. So a code counts only
when the process declared it: before a deliberate exit, it writes the code as one byte into a
pipe whose write end the supervisor passed it (its number in :data:`EXIT_NOTE_ENV`); after the
exit, the supervisor reads the pipe. The byte is in the pipe before the process is gone, so
nothing races; an exit that wrote nothing, or another code than it wrote, is just an exit.
"""

from __future__ import annotations

import contextlib
import os

__all__ = ["EXIT_NOTE_ENV", "ExitNote", "claim_exit_note", "declare_exit"]

EXIT_NOTE_ENV = "LLAMACTL_EXIT_NOTE_FD"


class _Claimed:
    fd: int | None = None


def claim_exit_note() -> None:
    """In the child, before user code runs: take the pipe's number out of the environment and
    keep the pipe from the processes the child starts or forks (they cannot declare its exit)."""
    raw = os.environ.pop(EXIT_NOTE_ENV, None)
    if raw is None or not raw.isdigit():
        return
    fd = int(raw)
    try:
        os.set_inheritable(fd, False)
    except OSError:
        return  # not passed to us after all (a worker started by hand with the variable set)
    if _Claimed.fd is None and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_forget_in_fork)
    _Claimed.fd = fd


def _forget_in_fork() -> None:
    fd, _Claimed.fd = _Claimed.fd, None
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)


def declare_exit(code: int) -> None:
    """In the child, right before it exits with ``code`` on purpose."""
    if _Claimed.fd is not None:
        with contextlib.suppress(OSError):
            os.write(_Claimed.fd, bytes([code & 0xFF]))


class ExitNote:
    """The supervisor's end of one child's pipe."""

    def __init__(self) -> None:
        self._read, self.child_fd = os.pipe()
        os.set_blocking(self._read, False)

    def sent(self) -> None:
        """The child has its copy: close ours of the write end (else the pipe never ends)."""
        if self.child_fd >= 0:
            os.close(self.child_fd)
            self.child_fd = -1

    def declared(self) -> int | None:
        """After the child exited: the code it declared last, or None."""
        if self._read < 0:
            return None
        with contextlib.suppress(OSError):
            data = os.read(self._read, 256)
            return data[-1] if data else None
        return None

    def close(self) -> None:
        self.sent()
        if self._read >= 0:
            os.close(self._read)
            self._read = -1
