"""The `llamactl` entry point: the typer app and its command groups."""

from __future__ import annotations

import typer

from llamactl import __version__
from llamactl.cli import deployments, init, run, serve, sessions, tasks, tui, validate, worker
from llamactl.cli.common import Settings
from llamactl.cli.misplaced import RootGroup

__all__ = ["app", "main"]

# Plain help (no rich): it shows flags without a bogus `<bool>` type and keeps rich (~70 ms) out of
# `--help`, which completion and scripts run often.
app = typer.Typer(
    name="llamactl",
    cls=RootGroup,
    help="Serve, run and watch multi-agent workflow deployments.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
app.command(name="init")(init.init)
app.command(name="validate")(validate.validate)
app.command(name="serve")(serve.serve)
app.command(name="worker")(worker.worker)
app.command(name="deploy")(deployments.deploy)
app.command(name="status")(deployments.status)
app.command(name="run", cls=run.RunCommand)(run.run)
app.add_typer(deployments.app, name="deployments")
app.add_typer(sessions.app, name="sessions")
app.add_typer(tasks.app, name="tasks")
app.command(name="tui")(tui.tui)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"llamactl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    server: str | None = typer.Option(
        None,
        "--server",
        envvar="LLAMACTL_SERVER",
        metavar="URL",
        help="The server's URL (http:// may be left out), for every command but serve.  "
        "[default: http://127.0.0.1:4501]",
    ),
    token: str | None = typer.Option(
        None,
        "--token",
        envvar="LLAMACTL_API_TOKEN",
        metavar="TOKEN",
        show_envvar=True,
        help="Bearer token for a server bound beyond loopback.",
    ),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Serve, run and watch multi-agent workflow deployments.

    Start a server with `llamactl serve deployment.yml`, then talk to it from another terminal:
    `llamactl run "hi"`, `llamactl tasks list`, `llamactl tasks events TASK --follow`.
    Data goes to stdout (`-o json` for scripts), progress and errors to stderr.
    """
    ctx.obj = Settings(server=server, token=token)


def main() -> None:
    app()
