"""`llamactl sessions list|create|show|delete`: tasks in one session share the workflow Context."""

from __future__ import annotations

import typer

from llamactl.cli.common import (
    Output,
    api_errors,
    connect,
    deployment_option,
    emit_json,
    every_option,
    limit_option,
    output_option,
    pick_deployment,
    say_more_shown,
    table,
    wide_option,
)
from llamactl.cli.ids import resolve_session, shorten

__all__ = ["app"]

SESSION_ARG_HELP = (
    "The session's id, or its start or end as lists show it (unique among the deployment's sessions)."
)

app = typer.Typer(
    help="List, create, inspect and delete sessions (tasks in a session share the workflow's Context).",
    no_args_is_help=True,
)


def _not_found(deployment: str) -> str:
    return f"list the sessions with `llamactl sessions list -d {deployment}`"


@app.command("list")
def list_sessions(
    ctx: typer.Context,
    *,
    deployment: str | None = deployment_option(),
    limit: int = limit_option("sessions"),
    every: bool = every_option("sessions"),
    wide: bool = wide_option(),
    output: Output = output_option(),
) -> None:
    """A deployment's newest sessions, oldest of them first, with how many tasks each has run and
    its last one (ids cut short: --wide or -o json for full ones)."""
    with connect(ctx) as client:
        name = pick_deployment(client, deployment)
        sessions = client.deployment(name).sessions
        with api_errors(not_found="list the deployments with `llamactl deployments list`"):
            if every:
                found, more = list(sessions.iter()), False
            else:
                page = sessions.page(limit=limit, newest_first=True)
                found, more = page.items[::-1], page.next_cursor is not None
    if output is Output.JSON:
        emit_json(found)
    else:
        ids = shorten([s.session_id for s in found] + [s.task_ids[-1] for s in found if s.task_ids])
        show = (lambda value: value) if wide else (lambda value: ids[value])
        rows = [
            [show(s.session_id), len(s.task_ids), show(s.task_ids[-1]) if s.task_ids else "-"] for s in found
        ]
        table(["SESSION", "TASKS", "LAST TASK"], rows)
    if more:
        say_more_shown(limit)


@app.command("create")
def create(
    ctx: typer.Context, deployment: str | None = deployment_option(), output: Output = output_option()
) -> None:
    """Start a new session and print its id (pass it to `llamactl run --session`)."""
    with connect(ctx) as client:
        name = pick_deployment(client, deployment)
        with api_errors(not_found="list the deployments with `llamactl deployments list`"):
            session = client.deployment(name).sessions.create()
    if output is Output.JSON:
        emit_json(session)
    else:
        typer.echo(session.session_id)


@app.command("show")
def show(
    ctx: typer.Context,
    *,
    session: str = typer.Argument(..., metavar="SESSION", help=SESSION_ARG_HELP),
    deployment: str | None = deployment_option(),
    output: Output = output_option(),
) -> None:
    """A session's tasks and state."""
    with connect(ctx) as client:
        name = pick_deployment(client, deployment)
        with api_errors(not_found=_not_found(name)):
            found = resolve_session(client.deployment(name).sessions, session)
    if output is Output.JSON:
        emit_json(found)
        return
    typer.echo(f"Session: {found.session_id}")
    typer.echo(f"Tasks: {', '.join(found.task_ids) if found.task_ids else 'none'}")
    if found.state:
        typer.echo(f"State: {', '.join(sorted(found.state))}")


@app.command("delete")
def delete(
    ctx: typer.Context,
    *,
    session: str = typer.Argument(..., metavar="SESSION", help=SESSION_ARG_HELP),
    deployment: str | None = deployment_option(),
) -> None:
    """Delete a session and its saved Context."""
    with connect(ctx) as client:
        name = pick_deployment(client, deployment)
        sessions = client.deployment(name).sessions
        with api_errors(not_found=_not_found(name)):
            session_id = resolve_session(sessions, session).session_id
            sessions.delete(session_id)
    typer.echo(f"Deleted session {session_id}")
