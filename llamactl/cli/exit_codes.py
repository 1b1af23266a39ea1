"""Exit codes of every llamactl command, in one place."""

from __future__ import annotations

from enum import IntEnum

__all__ = ["ExitCode"]


class ExitCode(IntEnum):
    OK = 0
    ERROR = 1
    """Something failed that is not one of the cases below."""
    USAGE = 2
    """Bad command-line usage (typer's own code)."""
    CONFIG = 3
    """A deployment file is invalid."""
    WORKFLOW_LOAD = 4
    """A service's workflow does not import or build."""
    NOT_FOUND = 5
    """An unknown deployment, service, session or task."""
    UNREACHABLE = 6
    """The server is not reachable."""
    INTERRUPTED = 130
