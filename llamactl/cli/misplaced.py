"""Where a client option goes when it is given after the command (`llamactl run --server URL`)."""

from __future__ import annotations

from typing import Any

from typer._click.core import Context
from typer._click.exceptions import NoSuchOption
from typer.core import TyperGroup

__all__ = ["RootGroup"]

_ADDRESS = "The server's address goes before the command"
_HINTS = {  # option given after a command: (what goes first, how, or which variable to set)
    "--server": (_ADDRESS, "--server URL", "LLAMACTL_SERVER"),
    "--port": (_ADDRESS, "--server 127.0.0.1:PORT", "LLAMACTL_SERVER"),
    "--host": (_ADDRESS, "--server HOST:PORT", "LLAMACTL_SERVER"),
    "--token": ("The token goes before the command", "--token TOKEN", "LLAMACTL_API_TOKEN"),
}


class RootGroup(TyperGroup):
    """The root command group: an unknown ``--server``, ``--port``, ``--host`` or ``--token``
    after a command is answered with where it goes (before the command) rather than only
    "No such option"."""

    def invoke(self, ctx: Context) -> Any:
        try:
            return super().invoke(ctx)
        except NoSuchOption as exc:
            hint = _HINTS.get(exc.option_name)
            if hint is not None and exc.ctx is not None:
                what, option, env = hint
                command = exc.ctx.command_path.split(" ", 1)[-1]
                exc.message += f". {what}: `{ctx.command_path} {option} {command} ...`, or set {env}"
                exc.possibilities = None  # "--service" for "--server" would only mislead
            raise
