"""The command that runs a service's worker: spawned for its replica, or started ahead of it.

Light on purpose: ``llamactl serve`` builds :func:`prestart_template` at its first instant,
before it imports the server (see :mod:`llamactl.server.supervisor.prestart`).
"""

from __future__ import annotations

import sys
from pathlib import Path

from llamactl.server.supervisor.models import ProcessSpec

__all__ = ["SERVER_SECRETS", "START_ENV", "prestart_template", "worker_command"]

SERVER_SECRETS = frozenset({"LLAMACTL_API_TOKEN"})
"""The server's own secrets: user code in its workers never sees them."""

START_ENV = {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"}
"""Set for every worker as it starts. No .pyc of user code: CPython checks them by mtime in whole
seconds and size, so a quick edit of the same length would load the old code after a reload.
Unbuffered: what user code prints reaches the server's output as it happens."""


def worker_command(python: Path | None = None) -> list[str]:
    """``python -P -m llamactl.server.services`` (``python``: the deployment venv's interpreter
    when it has python-dependencies, else ours)."""
    return [str(python or sys.executable), "-P", "-m", "llamactl.server.services"]


def prestart_template() -> ProcessSpec:
    """A worker on our interpreter, before its spec is known (it waits for it on stdin)."""
    return ProcessSpec(name="worker", argv=worker_command(), env=dict(START_ENV), hidden_env=SERVER_SECRETS)
