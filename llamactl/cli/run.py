"""`llamactl run`: run a task and print its result (or stream its events first)."""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from types import MethodType
from typing import TYPE_CHECKING, Any, TypeVar

import typer
from typer.core import TyperCommand

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
    warn,
)
from llamactl.cli.exit_codes import ExitCode
from llamactl.cli.follow_events import REATTACH_SECONDS, follow_events
from llamactl.cli.progress import interactive_stderr
from llamactl.cli.task_output import check_status

if TYPE_CHECKING:
    from llamactl.cli.run_outage import OutageWatch
    from llamactl.client.sync import Tasks
    from llamactl.server.types import EventEnvelope, TaskDefinition, TaskRecord

__all__ = ["RunCommand", "build_input", "run"]


def _pairs(self: Any, ctx: Any, value: Any) -> list[tuple[str, str]]:
    return [(str(k), str(v)) for k, v in value or ()]


class RunCommand(TyperCommand):
    """Lets `--arg KEY VALUE` repeat: typer has no list-of-pairs type, but its parser takes nargs=2."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if param.name == "arg":
                param.nargs = 2
                # typer would turn each pair into one string; keep the pairs as the parser made them
                setattr(param, "process_value", MethodType(_pairs, param))  # noqa: B010


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def build_input(message: str | None, args: list[tuple[str, str]], json_input: str | None) -> dict[str, Any]:
    """The task's input: --json, then MESSAGE as `message`, then each --arg (JSON when it parses)."""
    values: dict[str, Any] = {}
    if json_input is not None:
        try:
            parsed = json.loads(json_input)
        except ValueError as exc:
            raise typer.BadParameter(f"not JSON: {exc}", param_hint="--json") from None
        if not isinstance(parsed, dict):
            raise typer.BadParameter("must be a JSON object of the workflow's arguments", param_hint="--json")
        values.update(parsed)
    if message is not None:
        values["message"] = message
        if json_input is None and _is_json_object(message):
            warn(
                "MESSAGE is a JSON object: it goes to the workflow as the text of its `message` argument;"
                f" to give the workflow these arguments, use --json {shlex.quote(message)}"
            )
    for key, text in args:
        values[key] = _value(text)
    return values


def _is_json_object(text: str) -> bool:
    if not text.lstrip().startswith("{"):
        return False
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


def _print_result(result: Any, output: Output) -> None:
    if output is Output.JSON:
        emit_json(result, indent=None)
    elif isinstance(result, str):
        typer.echo(result)
    else:
        typer.echo(json.dumps(result, ensure_ascii=False))


def run(
    ctx: typer.Context,
    *,
    message: str | None = typer.Argument(
        None,
        metavar="[MESSAGE]",
        help="Passed to the workflow as its `message` argument.",
        show_default=False,
    ),
    deployment: str | None = deployment_option(),
    service: str | None = typer.Option(
        None,
        "--service",
        "-s",
        metavar="SERVICE",
        help="The service to run.  [default: the deployment's default service]",
    ),
    arg: list[str] = typer.Option(
        [],
        "--arg",
        "-a",
        metavar="KEY VALUE",
        help="A workflow argument (repeatable); VALUE is parsed as JSON when it is JSON, else kept as text.",
        show_default=False,
    ),
    json_input: str | None = typer.Option(
        None, "--json", metavar="INPUT", help="The workflow's arguments as one JSON object."
    ),
    session: str | None = typer.Option(
        None,
        "--session",
        "-i",
        metavar="SESSION",
        help="Run in this session (its id, or its start or end; see `llamactl sessions create`).  "
        "[default: a new one]",
    ),
    stream: bool = typer.Option(
        False, "--stream", help="Print the task's events as they come, then its result."
    ),
    detach: bool = typer.Option(
        False,
        "--detach",
        help="Send the task, print its id and return without waiting for it (then: `llamactl "
        "tasks events ID --follow`, `llamactl tasks show ID`).",
    ),
    output: Output = output_option(),
) -> None:
    """Run a task and print the workflow's result.

    At a terminal a spinner shows the task's status while it runs. When a human-in-the-loop
    workflow asks a question, `run` prompts for the answer and sends the line typed (as the
    workflow's HumanResponseEvent, {"response": <the line>}); the question may be answered
    elsewhere too (the dashboard, `llamactl tasks send-event`). Ctrl-D leaves it to those.
    Ctrl-C stops waiting (the task goes on).

    Examples, with the `streaming` template served (`llamactl serve templates/streaming/deployment.yml`):
    `llamactl run "hi"`, `llamactl run -a steps 5 --stream "hi"`,
    `llamactl run --json '{"message": "hi", "steps": 2}' -d streaming -i SESSION`.
    """
    from llamactl.cli.ids import resolve_session
    from llamactl.cli.run_outage import OutageWatch
    from llamactl.cli.run_watch import TaskWatch
    from llamactl.client.errors import (
        BackendUnavailable,
        NotLlamactlServer,
        ServerStopping,
        ServerUnreachable,
    )
    from llamactl.server.ids import new_id

    if detach and stream:
        raise typer.BadParameter("--detach returns at once: it cannot --stream too", param_hint="--detach")
    pairs: list[tuple[str, str]] = arg  # type: ignore[assignment]  # RunCommand made them pairs
    task_input = build_input(message, pairs, json_input)
    with connect(ctx) as client:
        name = pick_deployment(client, deployment)
        handle = client.deployment(name)
        tasks = handle.tasks
        not_found = f"check the names: `llamactl deployments show {name}`, `llamactl sessions list -d {name}`"
        task_id = new_id()
        with api_errors(not_found=not_found, bad_request="check the task's input", deployment=name):
            session_id = resolve_session(handle.sessions, session).session_id if session is not None else None
            try:
                spec: dict[str, Any] = {"service": service, "session_id": session_id, "task_id": task_id}
                # Once the task has reached the server, a server that goes away (killed, or
                # restarted by a supervisor) is waited for; before that, it is an error as usual.
                create = lambda: tasks.create(task_input, **spec)  # noqa: E731
                # While the server cannot reach its state store or queue, say so (and wait).
                with OutageWatch(client, name, say, service=service) as outage:
                    if detach:
                        _print_detached(_once_started(create, name, resend_unavailable=True), name, output)
                        return
                    if stream or interactive_stderr():
                        task = _once_started(create, name, resend_unavailable=True)
                        try:
                            if stream:
                                record = _stream(tasks, task, name, output)
                            else:
                                record = _watched(tasks, task, name, outage)
                        except (ServerUnreachable, BackendUnavailable, ServerStopping) as exc:
                            if isinstance(exc, NotLlamactlServer):
                                raise
                            record = _reattach(tasks, task_id, name, exc)
                    else:
                        # Off a terminal (a script): no spinner, but what the task asks, and the
                        # command that answers it, still show on stderr.
                        with TaskWatch(tasks, task_id, service or "", name, events_after=EVENTS_AFTER):
                            try:
                                result = _once_started(lambda: tasks.run(task_input, **spec), name)
                            except ServerUnreachable as exc:
                                if isinstance(exc, NotLlamactlServer) or not exc.sent:
                                    raise
                                record = _reattach(tasks, task_id, name, exc)
                            except BackendUnavailable as exc:
                                # Stored or not (the store may have failed the wait, or the
                                # create): wait for the task, sending it again if it is not there.
                                record = _reattach(tasks, task_id, name, exc, resend=create)
                            except ServerStopping as exc:
                                if exc.task_id != task_id:  # refused before it was stored
                                    raise
                                record = _reattach(tasks, task_id, name, exc)
                            else:
                                _print_result(result, output)
                                return
            except KeyboardInterrupt:
                fail(
                    f"interrupted: task {task_id} goes on without you",
                    f"follow it with `llamactl tasks events {task_id} -d {name} --follow`,"
                    f" or stop it with `llamactl tasks cancel {task_id} -d {name}`",
                    ExitCode.INTERRUPTED,
                )
    check_status(record, name)
    if not record.status.is_final:
        fail(
            f"the event stream ended while task {record.task_id} is {record.status.value}",
            f"follow it with `llamactl tasks events {record.task_id} -d {name} --follow`",
            ExitCode.ERROR,
        )
    _print_result(record.result, output)


def _print_detached(task: TaskDefinition, deployment: str, output: Output) -> None:
    """``--detach``: the task's id on stdout (its definition with -o json), how to follow it on stderr."""
    if output is Output.JSON:
        emit_json(task)
    else:
        typer.echo(task.task_id)
    say(
        f"Task {task.task_id} sent to service {task.service_id} (session {task.session_id}): follow it"
        f" with `llamactl tasks events {task.task_id} -d {deployment} --follow`; its result:"
        f" `llamactl tasks show {task.task_id} -d {deployment}`"
    )


def _stream(tasks: Tasks, task: TaskDefinition, deployment: str, output: Output) -> TaskRecord:
    """``--stream``: print the task's events as they come (across a server that goes away and
    comes back), then read its record."""
    from llamactl.cli.answer_prompt import answer_prompt, question_lines
    from llamactl.client.questions import is_input_required, question_of

    assert task.task_id is not None and task.service_id is not None  # the server fills them in
    task_id = task.task_id
    say(f"Task {task_id} (service {task.service_id}, session {task.session_id})")
    prompt = answer_prompt(tasks, task_id, task.service_id, deployment)

    def tell(event: EventEnvelope) -> None:
        """Nobody can type here: a question comes with the command that answers it, on stderr."""
        if is_input_required(event):
            for line in question_lines(question_of(event), task_id, deployment):
                say(line)

    try:
        follow_events(tasks, task_id, deployment, output, then=tell if prompt is None else prompt.seen)
    finally:
        if prompt is not None:
            prompt.close()
    return tasks.get(task_id)


def _watched(tasks: Tasks, task: TaskDefinition, deployment: str, outage: OutageWatch) -> TaskRecord:
    """At a terminal: show a spinner with the task's status (and any question it asks, or what
    the server cannot reach) while the server waits for its result, then read its record. A
    server that goes away meanwhile is waited for with the spinner and the question still on."""
    from llamactl.cli.run_watch import TaskWatch
    from llamactl.client.errors import (
        BackendUnavailable,
        NotLlamactlServer,
        ServerStopping,
        ServerUnreachable,
    )

    assert task.task_id is not None and task.service_id is not None  # the server fills them in
    with (
        TaskWatch(tasks, task.task_id, task.service_id, deployment) as watch,
        outage.showing(watch.print),
    ):
        try:
            tasks.result(task.task_id)
        except (ServerUnreachable, BackendUnavailable, ServerStopping) as exc:
            if isinstance(exc, NotLlamactlServer):
                raise
            return _reattach(tasks, task.task_id, deployment, exc, tell=watch.print)
    return tasks.get(task.task_id)


EVENTS_AFTER = 0.5
"""Seconds a run off a terminal waits before it follows the task's events for a question."""
START_WAIT_SECONDS = 120.0
"""How long ``run`` waits for a deployment that is still starting (the server's own start timeout)."""

T = TypeVar("T")


def _once_started(call: Callable[[], T], deployment: str, *, resend_unavailable: bool = False) -> T:
    """``call()``; while the server answers that the deployment is still starting (its services
    load their code), wait for it and call again: nothing was run yet. With
    ``resend_unavailable``, likewise while its state store or queue fails the request (nothing
    was kept; the OutageWatch around ``run`` says what the server cannot reach)."""
    import time

    from llamactl.client.errors import BackendUnavailable, DeploymentStarting

    deadline: float | None = None
    while True:
        try:
            return call()
        except (DeploymentStarting, BackendUnavailable) as exc:
            if isinstance(exc, BackendUnavailable) and not resend_unavailable:
                raise
            now = time.monotonic()
            if deadline is None:
                deadline = now + START_WAIT_SECONDS
                if isinstance(exc, DeploymentStarting):
                    say(
                        f"deployment '{deployment}' is starting: waiting for it"
                        f" (at most {START_WAIT_SECONDS:g} s; Ctrl-C stops waiting, nothing runs then)"
                    )
            if now > deadline:
                raise
            unavailable = isinstance(exc, BackendUnavailable)
        try:
            time.sleep(0.5)
        except KeyboardInterrupt:
            why = (
                "its server could not record it" if unavailable else f"deployment '{deployment}' was starting"
            )
            fail(
                f"interrupted while {why}: nothing was run",
                "run it again once `llamactl status` says Healthy"
                if unavailable
                else f"run it again once `llamactl deployments show {deployment}` answers",
                ExitCode.INTERRUPTED,
            )


def _reattach(
    tasks: Tasks,
    task_id: str,
    deployment: str,
    gone: Exception,
    *,
    resend: Callable[[], object] | None = None,
    tell: Callable[[str], None] = say,
) -> TaskRecord:
    """The server went away while ``task_id`` ran (killed, stopped, or restarted by a supervisor
    or by hand), or its state store or queue failed the wait: wait for it to come back, then for
    the task, which a restarted server finishes, or runs again, if it was stored. ``resend``:
    the task may not have been stored (its store failed the request that sent it): send it
    again (same id) if it is not there.
    ``tell`` writes what it waits for (at a terminal: above the spinner or the prompt)."""
    import contextlib
    import time

    from llamactl.client.errors import (
        BackendUnavailable,
        Conflict,
        NotFound,
        ServerError,
        ServerStopping,
        ServerUnreachable,
        WaitTimeout,
    )

    if isinstance(gone, ServerStopping):
        tell(
            f"the server is stopping; task {task_id} goes on when it is back: waiting for it"
            f" (at most {REATTACH_SECONDS:g} s; Ctrl-C stops waiting)"
        )
    elif not isinstance(gone, BackendUnavailable):  # else the OutageWatch says what is unreachable
        tell(
            f"{gone}; task {task_id} goes on when the server is back: waiting for it"
            f" (at most {REATTACH_SECONDS:g} s; Ctrl-C stops waiting)"
        )
    deadline = time.monotonic() + (START_WAIT_SECONDS if resend else REATTACH_SECONDS)
    delay = 0.2
    while True:
        try:
            try:
                tasks.result(task_id)  # the server waits until the task has ended
                return tasks.get(task_id)
            except NotFound:
                if resend is None:
                    fail(
                        f"the server went away before it had stored task {task_id}: it will not run",
                        "run it again",
                        ExitCode.ERROR,
                    )
                # Nothing was kept of it: send it again (same id). A store still refusing it is
                # waited out below like any 503, and the task is sent again after the pause.
                with contextlib.suppress(Conflict):  # an earlier send was stored after all
                    resend()
                resend = None
                continue
        except (ServerUnreachable, ServerError) as exc:
            # Not there yet, there and still stopping (it lets its tasks finish first), or back
            # and starting the deployment (503); but a server that waited as long as it may
            # (WaitTimeout) is answered as usual.
            if isinstance(exc, ServerError) and (exc.status != 503 or isinstance(exc, WaitTimeout)):
                raise
            if time.monotonic() + delay > deadline:
                if isinstance(exc, BackendUnavailable):
                    fail(
                        f"the server still cannot record task {task_id}: {exc.detail}",
                        "`llamactl status` says what it cannot reach;"
                        f" then `llamactl tasks show {task_id} -d {deployment}`",
                        ExitCode.UNREACHABLE,
                    )
                fail(
                    f"the server did not come back within {REATTACH_SECONDS:g} s;"
                    f" task {task_id} goes on when it does",
                    f"once it is back: `llamactl tasks show {task_id} -d {deployment}`",
                    ExitCode.UNREACHABLE,
                )
            time.sleep(delay)
            delay = min(2.0, delay * 2)
