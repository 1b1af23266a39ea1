"""`llamactl tasks list|show|events|cancel|where|send-event`."""

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
    every_option,
    fail,
    limit_option,
    output_option,
    pick_deployment,
    say,
    say_more_shown,
    table,
    timestamp,
    wide_option,
)
from llamactl.cli.exit_codes import ExitCode
from llamactl.cli.follow_events import follow_events
from llamactl.cli.ids import resolve_session, resolve_task, shorten
from llamactl.cli.style import status
from llamactl.cli.task_output import ATTEMPT_EVENT, check_status, print_event, print_record

if TYPE_CHECKING:
    from llamactl.client.sync import Tasks
    from llamactl.server.types import EventEnvelope, TaskRecord

__all__ = ["app", "check_status", "print_event", "print_record"]

app = typer.Typer(
    help="List, inspect, follow, cancel and answer tasks, and see where one runs.", no_args_is_help=True
)

HUMAN_RESPONSE_EVENT = "workflows.events.HumanResponseEvent"
TASK_ARG_HELP = "The task's id, or its start or end as lists show it (unique among the deployment's tasks)."
STATUSES = ("queued", "running", "completed", "failed", "cancelled")


def _not_found(deployment: str) -> str:
    return f"list the tasks with `llamactl tasks list -d {deployment}`"


@app.command("list")
def list_tasks(
    ctx: typer.Context,
    *,
    deployment: str | None = deployment_option(),
    session: str | None = typer.Option(
        None,
        "--session",
        "-i",
        metavar="SESSION",
        help="Only the tasks of this session (its id, or its start or end).",
    ),
    status_filter: str | None = typer.Option(
        None,
        "--status",
        metavar="STATUS",
        help="Only tasks in this status: queued, running, completed, failed or cancelled; asking: "
        "the running tasks whose workflow waits for a person's answer.",
    ),
    service: str | None = typer.Option(
        None, "--service", "-s", metavar="SERVICE", help="Only the tasks of this service."
    ),
    limit: int = limit_option("tasks"),
    every: bool = every_option("tasks"),
    wide: bool = wide_option(),
    output: Output = output_option(),
) -> None:
    """A deployment's newest tasks, oldest of them first (ids cut short: --wide or -o json for full ones)."""
    from llamactl.server.types import ASKING

    if status_filter is not None and status_filter not in (*STATUSES, ASKING):
        raise typer.BadParameter(
            f"'{status_filter}' is not a status: use one of {', '.join(STATUSES)} (or {ASKING})",
            param_hint="--status",
        )
    asking = status_filter == ASKING
    with connect(ctx) as client:
        name = pick_deployment(client, deployment)
        handle = client.deployment(name)
        with api_errors(not_found=f"list the sessions with `llamactl sessions list -d {name}`"):
            session_id = resolve_session(handle.sessions, session).session_id if session is not None else None
            filters: dict[str, Any] = {
                "session_id": session_id,
                "status": "running" if asking else status_filter,
                "service_id": service,
            }
            if asking:  # the server filters by status; running tasks are few: the rest is here
                found = [t for t in handle.tasks.iter(**filters) if t.waiting_for_answer]
                found, more = (found, False) if every else (found[-limit:], len(found) > limit)
            elif every:
                found, more = list(handle.tasks.iter(**filters)), False
            else:
                page = handle.tasks.page(**filters, limit=limit, newest_first=True)
                found, more = page.items[::-1], page.next_cursor is not None
    if output is Output.JSON:
        emit_json(found)
    else:
        _print_tasks(found, wide)
    if more:
        say_more_shown(limit)


_OWN_SESSION = "(own)"
"""The SESSION of a task run in a session of its own (no record: nothing to look up)."""


def _print_tasks(found: list[TaskRecord], wide: bool) -> None:
    from llamactl.server.types import shown_status

    ids = shorten([t.task_id for t in found] + [t.session_id for t in found if not t.own_session])
    show = (lambda value: value) if wide else (lambda value: ids[value])
    headers = ["TASK", "SERVICE", "STATUS", "ATTEMPTS", "SESSION", "CREATED"]
    rows: list[list[Any]] = []
    for t in found:
        row: list[Any] = [
            show(t.task_id),
            t.service_id,
            status(shown_status(t.status, t.waiting_for_answer)),
            t.attempts,
            _OWN_SESSION if t.own_session else show(t.session_id),
            timestamp(t.created_at),
        ]
        if wide:
            row.append(t.error)
        rows.append(row)
    table([*headers, "ERROR"] if wide else headers, rows)


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
        tasks = client.deployment(name).tasks
        with api_errors(not_found=_not_found(name)):
            record = resolve_task(tasks, task)
            attempts = _attempt_log(tasks, record) if output is Output.TEXT else []
            question = _question(tasks, record) if output is Output.TEXT else None
    if output is Output.JSON:
        emit_json(record)
    else:
        from llamactl.cli.answer_prompt import answer_command

        asks = None if question is None else (question, answer_command(record.task_id, name))
        print_record(record, attempts, question=asks)


def _question(tasks: Tasks, record: TaskRecord) -> str | None:
    """What the task's workflow asks while it waits for a person's answer (its last question)."""
    from llamactl.client.questions import is_input_required, question_of

    if not record.waiting_for_answer or record.status.is_final:
        return None
    asked = [e for e in tasks.events(record.task_id, follow=False) if is_input_required(e)]
    return question_of(asked[-1]) if asked else None


def _attempt_log(tasks: Tasks, record: TaskRecord) -> list[EventEnvelope]:
    """The log's markers of a task that ran more than once (where each attempt started, and why)."""
    if record.attempts <= 1:
        return []
    return [e for e in tasks.events(record.task_id, follow=False) if e.type == ATTEMPT_EVENT]


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
    """A task's event log (one line each; -o json: one JSON envelope a line).

    Besides the workflow's events the log holds the engine's: TaskAttempt where a retried task's
    next attempt starts, EventDelivered / EventRejected for each event sent in.
    """
    with connect(ctx) as client:
        name = pick_deployment(client, deployment)
        tasks = client.deployment(name).tasks
        with api_errors(not_found=_not_found(name)):
            task_id = resolve_task(tasks, task).task_id
            try:
                if follow:
                    follow_events(tasks, task_id, name, output, from_seq=from_seq)
                else:
                    for event in tasks.events(task_id, from_seq, follow=False):
                        print_event(event, output)
            except KeyboardInterrupt:
                raise typer.Exit(ExitCode.INTERRUPTED) from None


@app.command("cancel")
def cancel(
    ctx: typer.Context,
    *,
    task: str = typer.Argument(..., metavar="TASK", help=TASK_ARG_HELP),
    deployment: str | None = deployment_option(),
    wait: bool = typer.Option(
        True, "--wait/--no-wait", help="Wait until a running task has stopped (its worker is asked to)."
    ),
    wait_seconds: float = typer.Option(
        60.0,
        "--timeout",
        metavar="SECONDS",
        min=0,
        help="Wait at most this long for it to stop.  [default: 60]",
        show_default=False,
    ),
    output: Output = output_option(),
) -> None:
    """Cancel a task: at once if it has not started, else its worker is asked to stop it (and this waits)."""
    from llamactl.client.errors import Conflict

    with connect(ctx) as client:
        name = pick_deployment(client, deployment)
        tasks = client.deployment(name).tasks
        with api_errors(not_found=_not_found(name)):
            record = resolve_task(tasks, task)
            task_id = record.task_id
            finished = record.status.value if record.status.is_final else None
            if finished is None:
                try:
                    record = tasks.cancel(task_id)
                except Conflict as exc:  # it ended meanwhile
                    finished = exc.body.get("status") if isinstance(exc.body, dict) else None
                    finished = finished or "final"
            if finished is not None:
                fail(
                    f"task {task_id} has already finished ({finished}): there is nothing to cancel",
                    f"see how it ended: `llamactl tasks show {task_id} -d {name}`",
                    ExitCode.CONFLICT,
                )
            if not record.status.is_final and wait:
                say(f"Cancel requested: waiting for task {task_id} to stop...")
                if tasks.result(task_id, timeout=wait_seconds) is None:
                    fail(
                        f"task {task_id} is still {tasks.get(task_id).status.value} {wait_seconds:g} s after "
                        "the cancel request",
                        f"its code may not stop when asked: follow it with `llamactl tasks events {task_id} "
                        f"-d {name} --follow`",
                        ExitCode.STILL_RUNNING,
                    )
                record = tasks.get(task_id)
    if output is Output.JSON:
        emit_json(record)
        return
    if record.status.value == "cancelled":
        typer.echo(f"Task {task_id}: cancelled")
    elif record.status.is_final:
        typer.echo(f"Task {task_id}: {record.status.value} (it finished before the cancel took effect)")
    else:
        typer.echo(f"Task {task_id}: cancel requested (it is {record.status.value})")


@app.command("where")
def where(
    ctx: typer.Context,
    *,
    task: str = typer.Argument(..., metavar="TASK", help=TASK_ARG_HELP),
    deployment: str | None = deployment_option(),
    output: Output = output_option(),
) -> None:
    """Where a running task's code is now: the line it waits on, then each stack (its worker answers)."""
    with connect(ctx) as client:
        name = pick_deployment(client, deployment)
        tasks = client.deployment(name).tasks
        with api_errors(
            not_found=_not_found(name), conflict=f"see the task: `llamactl tasks show {task} -d {name}`"
        ):
            record = resolve_task(tasks, task)
            answer = tasks.where(record.task_id)
    if output is Output.JSON:
        emit_json(answer)
        return
    place = answer.where or "running (its worker cannot tell where)"
    typer.echo(f"Task {answer.task_id} on {answer.replica_id}: {place}")
    if answer.stacks:
        typer.echo(f"\n{answer.stacks.rstrip()}")


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
    event: str | None = typer.Option(
        None,
        "--event",
        metavar="CLASS",
        help=f"The event's class, as module.Class.  [default: {HUMAN_RESPONSE_EVENT}, whose fields must "
        'hold "response": what a workflow reads as ev.response]',
    ),
    service: str | None = typer.Option(
        None, "--service", "-s", metavar="SERVICE", help="The task's service.  [default: looked up]"
    ),
    deployment: str | None = deployment_option(),
    output: Output = output_option(),
) -> None:
    """Send an event into a running task (human in the loop), e.g. the answer it waits for.

    For a running task this returns once its workflow has the event, and fails if the event
    cannot be built (an unknown class, fields that do not fit) or delivered.
    """
    try:
        values = json.loads(fields)
    except ValueError as exc:
        raise typer.BadParameter(f"not JSON: {exc}", param_hint="--json") from None
    if not isinstance(values, dict):
        raise typer.BadParameter("must be a JSON object of the event's fields", param_hint="--json")
    if event is None:
        if "response" not in values:
            # A HumanResponseEvent takes any fields, but the workflows convention (and what `run`
            # and the dashboard send) is "response": other fields would reach a step that reads
            # ev.response and finds nothing, and the task would go on with no answer.
            raise typer.BadParameter(
                """an answer goes in "response": --json '{"response": ...}' (what a workflow """
                "reads as ev.response). To send other fields, name the event's class with --event",
                param_hint="--json",
            )
        event = HUMAN_RESPONSE_EVENT
    with connect(ctx) as client:
        name = pick_deployment(client, deployment)
        tasks = client.deployment(name).tasks
        with api_errors(
            not_found=_not_found(name),
            conflict=f"see how it ended: `llamactl tasks show {task} -d {name}`",
            bad_request="check --event (module.Class of a workflows Event the workflow imports) and --json",
        ):
            record = resolve_task(tasks, task)
            sent = tasks.send_event(
                record.task_id, values, service_id=service or record.service_id, event_type=event
            )
    if output is Output.JSON:
        emit_json(sent)
    else:
        say(f"Sent {event.rsplit('.', 1)[-1]} to task {record.task_id}")
