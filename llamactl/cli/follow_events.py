"""Following a task's events across a server that goes away and comes back (`run --stream`,
`tasks events --follow`): its event log is kept, so the rest is read from where it stopped."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from llamactl.cli.common import fail, say
from llamactl.cli.exit_codes import ExitCode
from llamactl.cli.task_output import print_event

if TYPE_CHECKING:
    from llamactl.cli.common import Output
    from llamactl.client.sync import Tasks
    from llamactl.server.types import EventEnvelope

__all__ = ["REATTACH_SECONDS", "follow_events"]

REATTACH_SECONDS = 60.0
"""How long a command waits for a server that went away while its task ran to come back."""


def follow_events(
    tasks: Tasks,
    task_id: str,
    deployment: str,
    output: Output,
    *,
    from_seq: int = 0,
    then: Callable[[EventEnvelope], None] | None = None,
) -> None:
    """Print ``task_id``'s events from ``from_seq`` until the task ends, passing each one to
    ``then`` once printed. A server that goes away meanwhile (killed, or restarted by a
    supervisor) is waited for, for ``REATTACH_SECONDS``, and the events are read again from the
    first one not printed."""
    from llamactl.client.errors import (
        DeploymentStarting,
        NotLlamactlServer,
        ServerStopping,
        ServerUnreachable,
        StreamBroken,
    )

    deadline: float | None = None
    while True:
        try:
            for event in tasks.events(task_id, from_seq=from_seq):
                print_event(event, output)
                if then is not None:
                    then(event)
                from_seq, deadline = event.seq + 1, None
            return
        except (StreamBroken, ServerUnreachable, DeploymentStarting, ServerStopping) as exc:
            # ServerStopping: it lets its running tasks finish, then exits (to be started again,
            # as often as not); DeploymentStarting: it is back and starts the deployment again.
            if isinstance(exc, NotLlamactlServer):
                raise
            if deadline is None:
                deadline = time.monotonic() + REATTACH_SECONDS
                why = "is stopping" if isinstance(exc, ServerStopping) else f"stopped answering ({exc})"
                say(
                    f"the server {why}; task {task_id} goes on: waiting for it"
                    f" to come back to follow the task again (at most {REATTACH_SECONDS:g} s;"
                    " Ctrl-C stops waiting)"
                )
            elif time.monotonic() > deadline:
                fail(
                    f"the server did not come back within {REATTACH_SECONDS:g} s;"
                    f" task {task_id} goes on when it does",
                    f"once it is back: `llamactl tasks events {task_id} -d {deployment}"
                    f" --follow --from {from_seq}`",
                    ExitCode.UNREACHABLE,
                )
            time.sleep(0.5)
