"""`python -m llamactl.tui [--server URL] [--token T] [-d NAME]`: the same as `llamactl tui`."""

from __future__ import annotations

import typer

from llamactl.cli.tui import tui

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)
app.command()(tui)

if __name__ == "__main__":
    app(prog_name="python -m llamactl.tui")
