"""The ``TaskAttempt`` markers a task's event log gets where each new attempt of it starts (the
worker of an earlier one died before it said anything, or the task goes on from a question)."""

from __future__ import annotations

import json
from typing import Any

from llamactl.server.control_plane.stored import StoredTask
from llamactl.server.state.base import Append, Write

__all__ = ["ATTEMPT_EVENT", "attempt_markers", "event_value"]

ATTEMPT_EVENT = "TaskAttempt"
"""``type`` of the event-log marker put where a new attempt of a task starts."""


def event_value(event: dict[str, Any], attempt: int) -> bytes:
    """An event envelope as the task's log stores it, stamped with its attempt."""
    return json.dumps({**event, "attempt": attempt}).encode()


def attempt_markers(
    stream: str, task: StoredTask, seen: int, now: int, replica_id: str | None, *, resumed: bool = False
) -> list[Write]:
    """Markers in ``stream`` (the task's event log) for attempts ``seen + 1`` to ``now``: the last
    one started on ``replica_id`` (``resumed``: from the question of attempt ``task.resume_from``),
    the others ended before their worker reported anything. A first attempt gets none."""
    out: list[Write] = []
    for attempt in range(seen + 1, now + 1):
        if attempt == 1 and now == 1:
            continue  # a first run needs no marker: only retried tasks get them
        if attempt == now and replica_id is not None:
            reason = f"attempt {attempt} started on {replica_id}"
            if resumed:
                reason += (
                    f", going on from the question attempt {task.resume_from} asked (its worker "
                    "stopped while it waited for the answer)"
                )
            elif task.resume_from == attempt - 1:
                reason += (
                    f" from its start: the Context saved as attempt {attempt - 1} waited for an "
                    "answer could not be restored (the worker's log says why)"
                )
            elif attempt > 1:
                reason += f" after attempt {attempt - 1} ended without a result"
        else:
            reason = f"attempt {attempt}: its worker stopped before it reported anything"
        value: dict[str, Any] = {
            "attempt": attempt,
            "replica_id": replica_id if attempt == now else None,
            "reason": reason,
        }
        if resumed and attempt == now:
            value["resumed_from"] = task.resume_from
        marker = {
            "value": value,
            "type": ATTEMPT_EVENT,
            "qualified_name": f"llamactl.{ATTEMPT_EVENT}",
        }
        out.append(Append(stream, event_value(marker, attempt), f"{task.task_id}:attempt:{attempt}"))
    return out
