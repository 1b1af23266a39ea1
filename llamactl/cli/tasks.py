"""`llamactl tasks list|show|events|cancel|send-event`."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import typer

from llamactl.cli.common import (
    Output,
    api_errors,
    connect,
    deployment_option,
    emit_json,
    fail,
    output_option,
    pick_deployment,
    say,
    table,
    timestamp,
)
from llamactl.cli.exit_codes import ExitCode

if TYPE_CHECKING:
    from llamactl.server.types import EventEnvelope, TaskRecord

__all__ = ["app", "print_event", "print_record"]

app = typer.Typer(help="List, inspect, follow, cancel and answer tasks.", no_args_is_help=True)

HUMAN_RESPONSE_EVENT = "workflows.events.HumanResponseEvent"
TASK_ARG_HELP = "The task's id."


def _not_found(deployment: str) -> str:
    return f"list the tasks with `llamactl tasks list -d {deployment}`"


def _finished(task_id: str, deployment: str) -> str:
    return f"the task has already finished: see `llamactl tasks show {task_id} -d {deployment}`"


def print_event(event: EventEnvelope, output: Output) -> None:
    if output is Output.JSON:
        emit_json(event, indent=None)
    else:
        value = json.dumps(event.value, ensure_ascii=False)
        typer.echo(f"{event.seq:>3}  {event.type}  {value}")


def print_record(record: TaskRecord) -> None:
    """A task record as `key: value` lines."""
    duration = None
    if record.started_at is not None and record.finished_at is not None:
        duration = f"{record.finished_at - record.started_at:.3f}s"
    lines: list[tuple[str, Any]] = [
        ("Task", record.task_id),
        ("Deployment", record.deployment),
        ("Service", record.service_id),
        ("Session", record.session_id),
        ("Status", record.status.value),
        ("Attempts", record.attempts),
        ("Replica", record.replica_id),
        ("Input", record.input or "{}"),
        ("Created", timestamp(record.created_at)),
        ("Started", timestamp(record.started_at)),
        ("Finished", timestamp(record.finished_at)),
        ("Duration", duration),
    ]
    if record.status.value == "completed":
        lines.append(("Result", json.dumps(record.result, ensure_ascii=False)))
    if record.error:
        lines.append(("Error", record.error))
    for key, value in lines:
        typer.echo(f"{key + ':':<12}{'-' if value is None else value}")
    if record.traceback:
        typer.echo("Traceback:")
        typer.echo(record.traceback.rstrip())


@app.command("list")
def list_tasks(
    ctx: typer.Context,
    *,
    deployment: str | None = deployment_option(),
    session: str | None = typer.Option(
        None, "--session", "-i", metavar="SESSION", help="Only the tasks of this session."
    ),
    status: str | None = typer.Option(
        None,
        "--status",
        metavar="STATUS",
        help="Only tasks in this status: queued, running, completed, failed or cancelled.",
    ),
    output: Output = output_option(),
) -> None:
    """A deployment's tasks, oldest first."""
    statuses = ("queued", "running", "completed", "failed", "cancelled")
    if status is not None and status not in statuses:
        raise typer.BadParameter(
            f"'{status}' is not a status: use one of {', '.join(statuses)}", param_hint="--status"
        )
    with connect(ctx) as client:
        name = pick_deployment(client, deployment)
        with api_errors(not_found=f"list the sessions with `llamactl sessions list -d {name}`"):
            found = client.deployment(name).tasks.list(session_id=session, status=status)
    if output is Output.JSON:
        emit_json(found)
        return
    table(
        ["TASK", "SERVICE", "STATUS", "ATTEMPTS", "SESSION", "CREATED"],
        [
            [t.task_id, t.service_id, t.status.value, t.attempts, t.session_id, timestamp(t.created_at)]
            for t in found
        ],
    )


@app.command("show")
def show(
    ctx: typer.Context,
    *,
    task: str = typer.Argument(..., metavar="TASK", help=TASK_ARG_HELP),
    deployment: str | None = deployment_option(),
    output: Output = output_option(),
) -> None:
    """Everything known about a task: status, attempts, timings, result or error."""
    with connect(ctx) as client:
        name = pick_deployment(client, deployment)
        with api_errors(not_found=_not_found(name)):
            record = client.deployment(name).tasks.get(task)
    if output is Output.JSON:
        emit_json(record)
    else:
        print_record(record)


@app.command("events")
def events(
    ctx: typer.Context,
    *,
    task: str = typer.Argument(..., metavar="TASK", help=TASK_ARG_HELP),
    deployment: str | None = deployment_option(),
    follow: bool = typer.Option(
        False, "--follow", "-f", help="Keep streaming new events until the task ends."
    ),
    from_seq: int = typer.Option(0, "--from", min=0, help="Start at this event number (0 is the first)."),
    output: Output = output_option(),
) -> None:
    """A task's event log (one line each; -o json: one JSON envelope a line)."""
    with connect(ctx) as client:
        name = pick_deployment(client, deployment)
        with api_errors(not_found=_not_found(name)):
            try:
                for event in client.deployment(name).tasks.events(task, from_seq, follow=follow):
                    print_event(event, output)
            except KeyboardInterrupt:
                raise typer.Exit(ExitCode.INTERRUPTED) from None


@app.command("cancel")
def cancel(
    ctx: typer.Context,
    *,
    task: str = typer.Argument(..., metavar="TASK", help=TASK_ARG_HELP),
    deployment: str | None = deployment_option(),
    output: Output = output_option(),
) -> None:
    """Cancel a task: at once if it has not started, else its worker is asked to stop it."""
    with connect(ctx) as client:
        name = pick_deployment(client, deployment)
        with api_errors(not_found=_not_found(name), conflict=_finished(task, name)):
            record = client.deployment(name).tasks.cancel(task)
    if output is Output.JSON:
        emit_json(record)
    else:
        typer.echo(f"Task {record.task_id}: {record.status.value}")


@app.command("send-event")
def send_event(
    ctx: typer.Context,
    *,
    task: str = typer.Argument(..., metavar="TASK", help=TASK_ARG_HELP),
    fields: str = typer.Option(
        ...,
        "--json",
        metavar="FIELDS",
        help='The event\'s fields as a JSON object, e.g. \'{"response": "42"}\'.',
    ),
    event: str = typer.Option(
        HUMAN_RESPONSE_EVENT, "--event", metavar="CLASS", help="The event's class, as module.Class."
    ),
    service: str | None = typer.Option(
        None, "--service", "-s", metavar="SERVICE", help="The task's service.  [default: looked up]"
    ),
    deployment: str | None = deployment_option(),
    output: Output = output_option(),
) -> None:
    """Send an event into a running task (human in the loop), e.g. the answer it waits for."""
    try:
        values = json.loads(fields)
    except ValueError as exc:
        raise typer.BadParameter(f"not JSON: {exc}", param_hint="--json") from None
    if not isinstance(values, dict):
        raise typer.BadParameter("must be a JSON object of the event's fields", param_hint="--json")
    with connect(ctx) as client:
        name = pick_deployment(client, deployment)
        with api_errors(
            not_found=_not_found(name),
            conflict=_finished(task, name),
            bad_request="check --event (module.Class of a workflows Event) and the fields in --json",
        ):
            sent = client.deployment(name).tasks.send_event(
                task, values, service_id=service, event_type=event
            )
    if output is Output.JSON:
        emit_json(sent)
    else:
        say(f"Sent {event.rsplit('.', 1)[-1]} to task {task}")


def check_status(record: TaskRecord, deployment: str) -> None:
    """Fails with the task's error when it did not complete."""
    if record.status.value in ("failed", "cancelled"):
        fail(
            f"task {record.task_id} {record.status.value}: {record.error or 'no error recorded'}",
            f"see its record and events: `llamactl tasks show {record.task_id} -d {deployment}`",
            ExitCode.TASK_FAILED,
        )
