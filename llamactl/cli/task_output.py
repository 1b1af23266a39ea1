"""How a task looks in text: its record, its events (the engine's own as sentences), and the
error of a task that did not complete."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import typer

from llamactl.cli.common import Output, emit_json, fail, timestamp
from llamactl.cli.exit_codes import ExitCode
from llamactl.cli.style import status, styled, use_color

if TYPE_CHECKING:
    from llamactl.server.types import EventEnvelope, TaskRecord

__all__ = ["ATTEMPT_EVENT", "MARKERS", "check_status", "print_event", "print_record"]

ATTEMPT_EVENT = "TaskAttempt"
MARKERS = {"TaskAttempt", "EventDelivered", "EventRejected"}
"""Events the engine writes into a task's log (not the workflow's): shown as sentences."""


def _marker_text(event: EventEnvelope) -> str:
    value = event.value if isinstance(event.value, dict) else {}
    if event.type == ATTEMPT_EVENT:
        return str(value.get("reason") or f"attempt {value.get('attempt')}")
    name = str(value.get("event") or "the event").rsplit(".", 1)[-1]
    if event.type == "EventRejected":
        return f"{name} was refused: {value.get('error')}"
    return f"{name} reached the run"


def print_event(event: EventEnvelope, output: Output) -> None:
    """One event a line: ``seq  type  value`` (the engine's markers as a sentence)."""
    if output is Output.JSON:
        emit_json(event, indent=None)
        return
    color = use_color(sys.stdout)
    if event.type in MARKERS:
        fg = "red" if event.type == "EventRejected" else "yellow" if event.type == ATTEMPT_EVENT else "cyan"
        kind = styled(event.type, fg, bold=True).render(color)
        typer.echo(f"{event.seq:>3}  {kind}  {_marker_text(event)}")
        return
    value = json.dumps(event.value, ensure_ascii=False)
    typer.echo(f"{event.seq:>3}  {styled(event.type, bold=True).render(color)}  {value}")


_OWN_SESSION = "its own (made for this run alone: not listed, keeps no Context)"


def _status_text(record: TaskRecord, color: bool) -> str:
    from llamactl.server.types import ASKING, shown_status

    shown = status(record.status.value).render(color)
    if shown_status(record.status, record.waiting_for_answer) == ASKING:
        shown += ", waiting for a person's answer"
    return shown


def print_record(
    record: TaskRecord,
    attempts: list[EventEnvelope] | None = None,
    *,
    question: tuple[str, str] | None = None,
) -> None:
    """A task record as `key: value` lines (with one line per attempt when there were several);
    ``question``: what it waits for a person's answer to, and the command that answers it."""
    color = use_color(sys.stdout)
    duration = None
    if record.started_at is not None and record.finished_at is not None:
        duration = f"{record.finished_at - record.started_at:.3f}s"
    lines: list[tuple[str, Any]] = [
        ("Task", record.task_id),
        ("Deployment", record.deployment),
        ("Service", record.service_id),
        ("Session", _OWN_SESSION if record.own_session else record.session_id),
        ("Status", _status_text(record, color)),
        ("Attempts", record.attempts),
        ("Replica", record.replica_id),
        ("Input", record.input or "{}"),
        ("Created", timestamp(record.created_at)),
        ("Started", timestamp(record.started_at)),
        ("Finished", timestamp(record.finished_at)),
        ("Duration", duration),
    ]
    if question is not None:
        lines += [("Asks", question[0]), ("Answer", question[1])]
    if record.status.value == "completed":
        lines.append(("Result", json.dumps(record.result, ensure_ascii=False)))
    if record.error:
        lines.append(("Error", styled(record.error, "red").render(color)))
    for key, value in lines:
        typer.echo(f"{key + ':':<12}{'-' if value is None else value}")
    if attempts:
        typer.echo("Attempt log:")
        for event in attempts:
            typer.echo(f"  {event.seq:>3}  {_marker_text(event)}")
    if record.traceback:
        typer.echo("Traceback:")
        typer.echo(record.traceback.rstrip())


def check_status(record: TaskRecord, deployment: str) -> None:
    """Fails with the task's error when it did not complete."""
    if record.status.value in ("failed", "cancelled"):
        fail(
            f"task {record.task_id} {record.status.value}: {record.error or 'no error recorded'}",
            f"see its record and events: `llamactl tasks show {record.task_id} -d {deployment}`",
            ExitCode.TASK_FAILED,
        )
