"""`llamactl deploy`, `llamactl status` and `llamactl deployments list|show|delete`."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from llamactl.cli.common import (
    Output,
    api_errors,
    connect,
    emit_json,
    fail,
    output_option,
    say,
    table,
    timestamp,
    warn,
)
from llamactl.cli.exit_codes import ExitCode
from llamactl.cli.ids import shorten
from llamactl.cli.style import status as style_status
from llamactl.cli.style import styled, use_color

if TYPE_CHECKING:
    from llamactl.server.config import DeploymentConfig
    from llamactl.server.types import ServiceStatus

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
    """Upload a deployment file to the server and wait until every service has a ready worker.

    The file is checked here first, so a mistake in it is reported (with its line) before
    anything is sent, with the same exit code as `llamactl validate` and `llamactl serve`.
    """
    from llamactl.cli.progress import Spinner

    config = _check_locally(file, base_path)
    services = list(config.services)
    with connect(ctx) as client:
        say(f"Deploying {file} to {client.base_url}...")
        listed = ", ".join(services[:5]) + (", ..." if len(services) > 5 else "")
        spinner = Spinner(
            f"Deploying {config.name}", f"starting {_plural(len(services), 'service')} ({listed})"
        )
        with _upload_errors(file, client.base_url), spinner:
            created = client.deployments.create(file, reload=reload, base_path=base_path)
        with api_errors():
            ready = client.deployment(created.name).services()
    if output is Output.JSON:
        emit_json(created)
        return
    width = max([len(s.service_id) for s in ready] + [8])
    color = use_color(sys.stderr)
    for svc in ready:
        up = sum(1 for r in svc.replicas if r.state.value == "ready")
        label = style_status("ready").render(color)
        say(f"  {svc.service_id.ljust(width)}  {label}  {up}/{svc.desired_replicas} replicas")
    typer.echo(f"Deployed {created.name}")


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _check_locally(file: Path, base_path: Path | None) -> DeploymentConfig:
    """The file as the server will read it: its errors name it (and its line), its warnings print here."""
    import warnings

    from llamactl.server.config import DeploymentConfigWarning, load_deployment_file
    from llamactl.server.errors import DeploymentConfigError

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DeploymentConfigWarning)
        try:
            config = load_deployment_file(file, base_path=base_path.resolve() if base_path else None)
        except DeploymentConfigError as exc:
            fail(str(exc), "fix the file, then deploy again", ExitCode.CONFIG)
    for warning in caught:
        warn(str(warning.message))
    return config


@contextmanager
def _upload_errors(file: Path, url: str) -> Iterator[None]:
    """The server's refusals of an upload, with the local file's name and the codes `serve` uses."""
    from llamactl.client import errors

    with api_errors(
        conflict="pass --reload to replace the running deployment",
        forbidden="start the server with `llamactl serve --deployments-root "
        f"{shlex.quote(str(file.resolve().parent))}` (and your other options) to let it load this file",
    ):
        try:
            yield
        except errors.BadRequest as exc:
            detail = exc.detail.replace(_UPLOADED, str(file))
            if "invalid deployment file" in detail:
                fail(detail, "fix the file, then deploy again", ExitCode.CONFIG)
            if " did not start: " in detail or "target '" in detail or "no `path`" in detail:
                fail(
                    detail, "fix the service's code or its `path`, then deploy again", ExitCode.WORKFLOW_LOAD
                )
            fail(detail, f"the server's log (where `llamactl serve` runs at {url}) says more", ExitCode.ERROR)


_UPLOADED = "<uploaded deployment file>"


def status(ctx: typer.Context, output: Output = output_option()) -> None:
    """Whether the server is up, and the deployments it runs."""
    with connect(ctx) as client, api_errors():
        answer = client.status()
        url = client.base_url
    if output is Output.JSON:
        emit_json(answer)
        return
    message = f" ({answer.status_message})" if answer.status_message else ""
    healthy = answer.status.value.lower() == "healthy"
    shown = styled(answer.status.value, "green" if healthy else "red", glyph="✓" if healthy else "✗")
    typer.echo(f"Server {url}: {shown.render(use_color(sys.stdout))}{message}")
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
        if ready:
            health = style_status("ready")
        elif svc.desired_replicas == 0:  # left to `llamactl worker` elsewhere; none is up yet
            health = styled("waiting", "yellow", glyph="○")
        else:
            health = styled("down", "red", glyph="✗")
        rows.append(
            [
                svc.service_id,
                svc.name,
                health,
                f"{ready}/{svc.desired_replicas}" if svc.desired_replicas else f"{ready} remote",
                svc.generation,
                svc.in_flight,
                _first_line(svc.last_error),
            ]
        )
    table(["SERVICE", "NAME", "STATUS", "READY", "GENERATION", "IN FLIGHT", "LAST ERROR"], rows)
    _replica_table(state.services)
    color = use_color(sys.stdout)
    failed_reloads = [svc for svc in state.services if svc.last_reload_error]
    if failed_reloads:
        typer.echo("")
        for svc in failed_reloads:
            when = f" at {timestamp(svc.last_reload_at)}" if svc.last_reload_at else ""
            head = styled(f"Last reload of {svc.service_id} failed{when}", "red").render(color)
            typer.echo(f"{head} (still serving generation {svc.generation}):")
            for line in (svc.last_reload_error or "").rstrip().splitlines():
                typer.echo(f"  {line}")
    typer.echo("")
    counts = ", ".join(f"{n} {s}" for s, n in sorted(state.tasks.items()) if n) or "none"
    typer.echo(f"Sessions: {state.sessions}")
    typer.echo(f"Tasks: {counts}")
    if state.recent_tasks:
        typer.echo("")
        typer.echo("Recent tasks:")
        recent = state.recent_tasks[:10]
        ids = shorten([t.task_id for t in recent])
        table(
            ["TASK", "SERVICE", "STATUS", "CREATED"],
            [
                [ids[t.task_id], t.service_id, style_status(t.status.value), timestamp(t.created_at)]
                for t in recent
            ],
        )


def _replica_table(services: list[ServiceStatus]) -> None:
    """Each worker process: where it runs (``llamactl worker`` replicas name their host), how
    busy it is (tasks running / at most at once now), since when, how often it restarted."""
    replicas = [replica for svc in services for replica in svc.replicas]
    if not replicas:
        return
    typer.echo("")
    typer.echo("Replicas:")
    table(
        ["REPLICA", "STATE", "HOST", "PID", "TASKS", "STARTED", "RESTARTS", "LAST ERROR"],
        [
            [
                r.replica_id,
                style_status(r.state.value),
                r.host or "-",
                r.pid if r.pid is not None else "-",
                f"{r.in_flight}/{r.concurrency_limit or r.max_concurrency}",
                timestamp(r.started_at),
                r.restarts,
                _first_line(r.last_error),
            ]
            for r in replicas
        ],
    )


def _first_line(text: str | None) -> str | None:
    return text.strip().splitlines()[0] if text and text.strip() else None


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
