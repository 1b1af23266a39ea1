"""The `llamactl` entry point: the typer app and its command groups."""

from __future__ import annotations

import typer

from llamactl import __version__
from llamactl.cli.serve import serve

__all__ = ["app", "main"]

app = typer.Typer(
    name="llamactl",
    help="Serve, run and watch multi-agent workflow deployments.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command(name="serve")(serve)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"llamactl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Serve, run and watch multi-agent workflow deployments."""


def main() -> None:
    app()
