"""What every client command shares: settings, options, the client, errors and output.

Cheap to import on purpose: the client (httpx) and the wire models load inside the functions.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, NoReturn

import typer

from llamactl.cli.exit_codes import ExitCode
from llamactl.cli.style import Styled, error_label, use_color, warning_label

if TYPE_CHECKING:
    from llamactl.client import Client

__all__ = [
    "DEPLOYMENT_HELP",
    "Output",
    "Settings",
    "api_errors",
    "connect",
    "deployment_option",
    "emit_json",
    "fail",
    "output_option",
    "pick_deployment",
    "say",
    "settings",
    "table",
    "timestamp",
    "to_jsonable",
    "warn",
]

DEPLOYMENT_HELP = "The deployment; may be left out when the server runs exactly one."
OUTPUT_HELP = "text: readable lines and tables; json: machine-readable JSON on stdout."
UNREACHABLE_HINT = (
    "start a server with `llamactl serve deployment.yml`,"
    " or point --server (LLAMACTL_SERVER) at a running one"
)
NOT_LLAMACTL_HINT = (
    "point --server (LLAMACTL_SERVER) at the URL `llamactl serve` printed (Listening on http://HOST:PORT)"
)


class Output(StrEnum):
    """How a read command prints what it got."""

    TEXT = "text"
    JSON = "json"


@dataclass
class Settings:
    """The root options, kept on the typer context for the commands."""

    server: str | None = None
    token: str | None = None


def settings(ctx: typer.Context) -> Settings:
    found = ctx.find_object(Settings)
    return found if found is not None else Settings()


def connect(ctx: typer.Context) -> Client:
    """A client for the server the root options (or LLAMACTL_SERVER / LLAMACTL_API_TOKEN) name."""
    from llamactl.client import Client
    from llamactl.client.errors import InvalidServerUrl

    options = settings(ctx)
    try:
        return Client(options.server, token=options.token)
    except InvalidServerUrl as exc:
        fail(str(exc), None, ExitCode.USAGE)


def say(line: str) -> None:
    """Progress and notes: stderr, so stdout stays data."""
    typer.echo(line, err=True)


def warn(message: str) -> None:
    """``Warning: message`` on stderr (yellow at a terminal)."""
    label = warning_label().render(use_color(sys.stderr))
    typer.echo(f"{label} {message}", err=True)


def _repeats(message: str, hint: str) -> bool:
    """Whether ``hint`` says nothing the message has not said: the command it suggests, or its words."""
    commands = [quoted for quoted in hint.split("`")[1::2] if quoted.startswith("llamactl ")]
    for command in commands:
        said = re.escape(command.split(" -d ")[0])
        if re.search(rf"(?<![\w-]){said}(?![\w-])", message):
            return True
    return hint.lower().rstrip(".") in message.lower()


def fail(message: str, hint: str | None, code: ExitCode) -> NoReturn:
    """`Error: message` and `Hint: hint` on stderr (one line each), then exit with ``code``.

    The hint is left out when the message already says it (the server's errors often end with
    what to do).
    """
    typer.echo(f"{error_label().render(use_color(sys.stderr))} {message}", err=True)
    if hint and not _repeats(message, hint):
        typer.echo(f"Hint: {hint}", err=True)
    raise typer.Exit(code)


def _scope(deployment: str | None) -> str:
    return f" -d {deployment}" if deployment else ""


@contextmanager
def api_errors(
    *,
    not_found: str | None = None,
    conflict: str | None = None,
    bad_request: str | None = None,
    bad_request_code: ExitCode = ExitCode.BAD_REQUEST,
    forbidden: str | None = None,
    deployment: str | None = None,
) -> Iterator[None]:
    """Turns the client's errors into `Error:` + `Hint:` on stderr and the matching exit code.

    The keyword arguments are the hints of the command at hand for each kind of refusal.
    """
    try:
        yield
    except Exception as exc:
        from llamactl.client import errors

        if not isinstance(exc, errors.ClientError):
            raise
        scope = _scope(deployment)
        if isinstance(exc, errors.NotLlamactlServer):
            fail(str(exc), NOT_LLAMACTL_HINT, ExitCode.UNREACHABLE)
        if isinstance(exc, errors.ServerUnreachable):
            fail(str(exc), UNREACHABLE_HINT, ExitCode.UNREACHABLE)
        if isinstance(exc, errors.InvalidServerUrl):
            fail(str(exc), None, ExitCode.USAGE)
        if isinstance(exc, errors.Unauthorized):
            fail(
                str(exc),
                "pass --token TOKEN or set LLAMACTL_API_TOKEN to the server's token",
                ExitCode.UNAUTHORIZED,
            )
        if isinstance(exc, errors.Forbidden):
            fail(str(exc), forbidden, ExitCode.FORBIDDEN)
        if isinstance(exc, errors.NotFound):
            fail(
                str(exc), not_found or "list what exists with `llamactl deployments list`", ExitCode.NOT_FOUND
            )
        if isinstance(exc, errors.Conflict):
            fail(str(exc), conflict, ExitCode.CONFLICT)
        if isinstance(exc, errors.BadRequest):
            fail(str(exc), bad_request, bad_request_code)
        if isinstance(exc, errors.TaskFailed):
            hint = (
                f"see its record and events: `llamactl tasks show {exc.task_id}{scope}`"
                if exc.task_id
                else None
            )
            fail(f"task {exc.task_status or 'failed'}: {exc.detail}", hint, ExitCode.TASK_FAILED)
        if isinstance(exc, errors.Overloaded):
            fail(exc.detail, f"try again in {exc.retry_after:g} s", ExitCode.BUSY)
        if isinstance(exc, errors.DeploymentDeleting):
            fail(
                exc.detail,
                "its running tasks finish, then it is gone: deploy it again"
                " (`llamactl deploy deployment.yml`) to send it tasks",
                ExitCode.CONFLICT,
            )
        if isinstance(exc, errors.ServerStopping):
            where = f" at {exc.url}" if exc.url else ""
            if exc.task_id:
                fail(
                    f"the server{where} is stopping; task {exc.task_id} is {exc.task_status or 'unfinished'}",
                    f"it goes on when the server is back: `llamactl tasks show {exc.task_id}{scope}`",
                    ExitCode.UNREACHABLE,
                )
            fail(
                f"the server{where} is stopping: it lets its running tasks finish, then exits",
                "start it again with `llamactl serve` once it has stopped, then retry",
                ExitCode.UNREACHABLE,
            )
        if isinstance(exc, errors.WaitTimeout):
            if exc.task_id:
                fail(
                    f"task {exc.task_id} is still {exc.task_status or 'running'}: the server stopped waiting",
                    f"it goes on: follow it with `llamactl tasks events {exc.task_id}{scope} --follow`"
                    f" or look with `llamactl tasks show {exc.task_id}{scope}`",
                    ExitCode.STILL_RUNNING,
                )
            fail(exc.detail, "try again with a longer wait", ExitCode.STILL_RUNNING)
        if isinstance(exc, errors.BackendUnavailable):
            what = "state store" if exc.backend == "state_store" else "message queue"
            fail(
                str(exc),
                f"the deployment's {what} failed it (unreachable, or refusing writes):"
                " `llamactl status` says which and why; try again once it is back",
                ExitCode.ERROR,
            )
        if isinstance(exc, errors.ServerError) and exc.status == 503:
            fail(str(exc), "the server is busy, starting or stopping: try again in a moment", ExitCode.ERROR)
        if isinstance(exc, errors.ServerError):
            fail(
                str(exc), "the server failed: its log (where `llamactl serve` runs) says why", ExitCode.ERROR
            )
        fail(str(exc), None, ExitCode.ERROR)


def pick_deployment(client: Client, name: str | None) -> str:
    """``name``, or the only deployment the server runs."""
    if name:
        return name
    with api_errors():
        names = [d.name for d in client.deployments.list()]
    if len(names) == 1:
        return names[0]
    if not names:
        fail(
            "the server runs no deployment",
            "deploy one with `llamactl deploy deployment.yml`",
            ExitCode.NOT_FOUND,
        )
    fail(
        f"the server runs {len(names)} deployments: {', '.join(sorted(names))}",
        "choose one with -d NAME",
        ExitCode.USAGE,
    )


def to_jsonable(value: Any) -> Any:
    """Wire models (and lists of them) as plain JSON values."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: to_jsonable(v) for k, v in value.items()}
    return value


def emit_json(value: Any, *, indent: int | None = 2) -> None:
    typer.echo(json.dumps(to_jsonable(value), indent=indent, ensure_ascii=False))
    sys.stdout.flush()


def _cell(value: Any) -> Styled:
    if isinstance(value, Styled):
        return value
    return Styled("-" if value is None or value == "" else str(value))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Aligned columns on stdout; ``-`` for empty cells; styled cells in colour at a terminal."""
    color = use_color(sys.stdout)
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h)] + [r[i].width(color) for r in cells]) for i, h in enumerate(headers)]
    typer.echo("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for row in cells:
        parts = [c.render(color) + " " * (w - c.width(color)) for c, w in zip(row, widths, strict=True)]
        typer.echo("  ".join(parts).rstrip())


def deployment_option() -> Any:
    return typer.Option(
        None, "--deployment", "-d", metavar="NAME", envvar="LLAMACTL_DEPLOYMENT", help=DEPLOYMENT_HELP
    )


def output_option() -> Any:
    return typer.Option(
        Output.TEXT, "--output", "-o", metavar="text|json", help=OUTPUT_HELP, case_sensitive=False
    )


def limit_option(things: str) -> Any:
    """``--limit N``: a list shows the newest N ``things`` (20 unless told)."""
    return typer.Option(
        20, "--limit", "-n", min=1, max=10_000, metavar="N", help=f"Show the newest N {things} (1 to 10000)."
    )


def every_option(things: str) -> Any:
    """``--all``: a list shows every one of its ``things``."""
    return typer.Option(False, "--all", help=f"Show every one of the {things} (read a page at a time).")


def wide_option() -> Any:
    return typer.Option(False, "--wide", "-w", help="Full ids and every column.")


def say_more_shown(limit: int) -> None:
    """Under a list cut to its newest ``limit`` rows: how to see the rest."""
    say(f"(the newest {limit} shown: --limit N or --all for more)")


def timestamp(value: float | None) -> str | None:
    """Local time of day (with the date when not today) of an epoch timestamp."""
    if value is None:
        return None
    import time

    day = time.strftime("%Y-%m-%d", time.localtime(value))
    today = time.strftime("%Y-%m-%d")
    return time.strftime("%H:%M:%S" if day == today else "%Y-%m-%d %H:%M:%S", time.localtime(value))
