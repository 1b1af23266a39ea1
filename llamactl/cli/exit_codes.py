"""Exit codes of every llamactl command, in one place."""

from __future__ import annotations

from enum import IntEnum

__all__ = ["ExitCode"]


class ExitCode(IntEnum):
    OK = 0
    ERROR = 1
    """Something failed that is not one of the cases below (including a server error)."""
    USAGE = 2
    """Bad command-line usage (typer's own code), or a choice the command cannot make for you."""
    CONFIG = 3
    """A deployment file is invalid."""
    WORKFLOW_LOAD = 4
    """A service's workflow does not import or build."""
    NOT_FOUND = 5
    """An unknown deployment, service, session or task."""
    UNREACHABLE = 6
    """No llamactl server answers at the URL: none runs there, what answers is not one, or it is
    stopping."""
    TASK_FAILED = 7
    """The task ran and failed, or was cancelled."""
    CONFLICT = 8
    """The request clashes with the current state (deployment exists, task already finished)."""
    UNAUTHORIZED = 9
    """The server wants a token (--token / LLAMACTL_API_TOKEN) and got none or a wrong one."""
    BAD_REQUEST = 10
    """The server refused the request's content (bad input, malformed event)."""
    NOT_EMPTY = 11
    """`llamactl init`: the target folder exists and is not empty (pass --force to write into it)."""
    STILL_RUNNING = 12
    """The task did not finish while the command waited for it; it goes on (follow it with `tasks show`)."""
    BUSY = 13
    """The service's queue is full (HTTP 429): try again later."""
    FORBIDDEN = 14
    """The server's policy refuses it: a deployment folder outside its roots, an install it does not allow."""
    INTERRUPTED = 130
