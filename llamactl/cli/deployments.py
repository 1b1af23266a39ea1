"""`llamactl deploy`, `llamactl status` and `llamactl deployments list|show|delete`."""

from __future__ import annotations

from pathlib import Path

import typer

from llamactl.cli.common import (
    Output,
    api_errors,
    connect,
    emit_json,
    output_option,
    say,
    table,
    timestamp,
)
from llamactl.cli.exit_codes import ExitCode

__all__ = ["app", "deploy", "status"]

app = typer.Typer(help="List, inspect and delete the server's deployments.", no_args_is_help=True)

LIST_HINT = "list them with `llamactl deployments list`"


def deploy(
    ctx: typer.Context,
    *,
    file: Path = typer.Argument(
        ...,
        metavar="FILE",
        help="The deployment file (deployment.yml) to upload.",
        exists=True,
        dir_okay=False,
    ),
    reload: bool = typer.Option(False, "--reload", help="Replace a running deployment of the same name."),
    base_path: Path | None = typer.Option(
        None,
        "--base-path",
        metavar="DIR",
        help="Folder the file's relative paths are resolved against, on the server.  "
        "[default: the file's folder]",
        show_default=False,
    ),
    output: Output = output_option(),
) -> None:
    """Upload a deployment file to the server and wait until every service has a ready worker."""
    with connect(ctx) as client:
        say(f"Deploying {file} to {client.base_url}...")
        with api_errors(
            conflict="pass --reload to replace the running deployment",
            bad_request="fix the file (or the service's code), then deploy again",
            bad_request_code=ExitCode.CONFIG,
        ):
            created = client.deployments.create(file, reload=reload, base_path=base_path)
    if output is Output.JSON:
        emit_json(created)
    else:
        typer.echo(f"Deployed {created.name}")


def status(ctx: typer.Context, output: Output = output_option()) -> None:
    """Whether the server is up, and the deployments it runs."""
    with connect(ctx) as client, api_errors():
        answer = client.status()
        url = client.base_url
    if output is Output.JSON:
        emit_json(answer)
        return
    message = f" ({answer.status_message})" if answer.status_message else ""
    typer.echo(f"Server {url}: {answer.status.value}{message}")
    names = answer.deployments or []
    typer.echo(f"Deployments: {', '.join(names) if names else 'none'}")
    if not names:
        say("Hint: deploy one with `llamactl deploy deployment.yml`")


@app.command("list")
def list_deployments(ctx: typer.Context, output: Output = output_option()) -> None:
    """The deployments the server runs, one name a line."""
    with connect(ctx) as client, api_errors():
        found = client.deployments.list()
    if output is Output.JSON:
        emit_json(found)
        return
    for deployment in found:
        typer.echo(deployment.name)


@app.command("show")
def show(
    ctx: typer.Context,
    *,
    name: str = typer.Argument(..., metavar="NAME", help="The deployment's name."),
    output: Output = output_option(),
) -> None:
    """A deployment's services and replicas, task counts and newest tasks."""
    with connect(ctx) as client, api_errors(not_found=LIST_HINT):
        state = client.deployment(name).state()
    if output is Output.JSON:
        emit_json(state)
        return
    typer.echo(f"Deployment: {state.deployment}")
    typer.echo("")
    rows = []
    for svc in state.services:
        ready = sum(1 for r in svc.replicas if r.state.value == "ready")
        rows.append(
            [
                svc.service_id,
                svc.name,
                svc.generation,
                f"{ready}/{svc.desired_replicas}",
                svc.in_flight,
                svc.last_error,
            ]
        )
    table(["SERVICE", "NAME", "GENERATION", "READY", "IN FLIGHT", "LAST ERROR"], rows)
    typer.echo("")
    counts = ", ".join(f"{n} {s}" for s, n in sorted(state.tasks.items()) if n) or "none"
    typer.echo(f"Sessions: {state.sessions}")
    typer.echo(f"Tasks: {counts}")
    if state.recent_tasks:
        typer.echo("")
        typer.echo("Recent tasks:")
        table(
            ["TASK", "SERVICE", "STATUS", "CREATED"],
            [
                [t.task_id, t.service_id, t.status.value, timestamp(t.created_at)]
                for t in state.recent_tasks[:10]
            ],
        )


@app.command("delete")
def delete(
    ctx: typer.Context,
    *,
    name: str = typer.Argument(..., metavar="NAME", help="The deployment's name."),
    output: Output = output_option(),
) -> None:
    """Stop a deployment's workers (running tasks finish first) and remove it from the server."""
    with connect(ctx) as client:
        say(f"Stopping {name}...")
        with api_errors(not_found=LIST_HINT):
            deleted = client.deployments.delete(name)
    if output is Output.JSON:
        emit_json(deleted)
    else:
        typer.echo(f"Deleted {deleted.name}")
