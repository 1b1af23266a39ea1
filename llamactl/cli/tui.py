"""`llamactl tui`: the live dashboard (Textual loads only when the command runs)."""

from __future__ import annotations

import sys

import typer

from llamactl.cli.common import deployment_option, fail, settings
from llamactl.cli.exit_codes import ExitCode

__all__ = ["tui"]


def tui(
    ctx: typer.Context,
    *,
    server: str | None = typer.Option(
        None,
        "--server",
        metavar="URL",
        help="The server's URL.  [default: LLAMACTL_SERVER, else http://127.0.0.1:4501]",
    ),
    token: str | None = typer.Option(
        None,
        "--token",
        metavar="TOKEN",
        help="Bearer token for a server bound beyond loopback.  [default: LLAMACTL_API_TOKEN]",
    ),
    deployment: str | None = deployment_option(),
    max_tasks: int = typer.Option(
        2_000,
        "--max-tasks",
        min=1,
        metavar="N",
        envvar="LLAMACTL_TUI_MAX_TASKS",
        help="Tasks kept in memory (the newest; finished ones are dropped first).",
    ),
    max_events: int = typer.Option(
        2_000,
        "--max-events",
        min=1,
        metavar="N",
        envvar="LLAMACTL_TUI_MAX_EVENTS",
        help="Events kept for the task on show (the newest).",
    ),
    max_rows: int = typer.Option(
        300, "--max-rows", min=1, metavar="N", help="Rows the tasks table shows at once."
    ),
    theme: str | None = typer.Option(
        None,
        "--theme",
        metavar="THEME",
        envvar="LLAMACTL_TUI_THEME",
        help="A Textual theme (textual-dark, textual-light, nord, ...); ctrl+p switches it live.",
    ),
) -> None:
    """Open the live dashboard: services, sessions, tasks, event streams and control-plane state.

    It starts even when the server is down (and waits for it). Press ? in it for its keys,
    ctrl+p for every action, q to quit.
    """
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        fail(
            "the dashboard needs a terminal (stdin and stdout are not one)",
            "run it in a terminal; from scripts use `llamactl tasks list -o json`",
            ExitCode.USAGE,
        )
    from llamactl.tui.app import DashboardApp
    from llamactl.tui.config import DashboardConfig

    root = settings(ctx)
    config = DashboardConfig(
        server=server or root.server,
        token=token or root.token,
        deployment=deployment,
        max_tasks=max_tasks,
        max_events=max_events,
        max_rows=max_rows,
        theme=theme,
    )
    app = DashboardApp(config)
    if theme is not None and theme not in app.available_themes:
        known = ", ".join(sorted(app.available_themes))
        fail(f"unknown theme '{theme}'", f"use one of: {known}", ExitCode.USAGE)
    app.run()
