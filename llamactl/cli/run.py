"""`llamactl run`: run a task and print its result (or stream its events first)."""

from __future__ import annotations

import json
from types import MethodType
from typing import Any

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
)
from llamactl.cli.exit_codes import ExitCode
from llamactl.cli.tasks import check_status, print_event

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
    for key, text in args:
        values[key] = _value(text)
    return values


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
        help="Run in this session (see `llamactl sessions create`).  [default: a new one]",
    ),
    stream: bool = typer.Option(
        False, "--stream", help="Print the task's events as they come, then its result."
    ),
    output: Output = output_option(),
) -> None:
    """Run a task and print the workflow's result.

    Examples: `llamactl run "hi"`, `llamactl run -s stream -a count 3 --stream`,
    `llamactl run --json '{"name": "Ada"}' -d my-app -i SESSION`.
    """
    pairs: list[tuple[str, str]] = arg  # type: ignore[assignment]  # RunCommand made them pairs
    task_input = build_input(message, pairs, json_input)
    with connect(ctx) as client:
        name = pick_deployment(client, deployment)
        tasks = client.deployment(name).tasks
        not_found = f"check the names: `llamactl deployments show {name}`, `llamactl sessions list -d {name}`"
        if not stream:
            try:
                with api_errors(not_found=not_found, bad_request="check the task's input", deployment=name):
                    result = tasks.run(task_input, service=service, session_id=session)
            except KeyboardInterrupt:
                fail(
                    "interrupted",
                    f"the task may still run: `llamactl tasks list -d {name}`",
                    ExitCode.INTERRUPTED,
                )
            _print_result(result, output)
            return
        with api_errors(not_found=not_found, bad_request="check the task's input", deployment=name):
            task = tasks.create(task_input, service=service, session_id=session)
            say(f"Task {task.task_id} (service {task.service_id}, session {task.session_id})")
            try:
                for event in tasks.events(task.task_id):
                    print_event(event, output)
            except KeyboardInterrupt:
                fail(
                    "interrupted: the task keeps running",
                    f"cancel it with `llamactl tasks cancel {task.task_id} -d {name}`",
                    ExitCode.INTERRUPTED,
                )
            record = tasks.get(task.task_id)
    check_status(record, name)
    if not record.status.is_final:
        fail(
            f"the event stream ended while task {record.task_id} is {record.status.value}",
            f"follow it with `llamactl tasks events {record.task_id} -d {name} --follow`",
            ExitCode.ERROR,
        )
    _print_result(record.result, output)
