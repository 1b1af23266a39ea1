"""`llamactl serve`: the API server, its deployments and their workers, until Ctrl-C."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from llamactl.cli.common import fail, say, settings
from llamactl.cli.exit_codes import ExitCode

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable

__all__ = ["serve"]


def serve(
    ctx: typer.Context,
    *,
    files: list[Path] | None = typer.Argument(
        None,
        metavar="FILE",
        help="Deployment files (deployment.yml) to start with the server. Llama Deploy files load as they "
        "are. More can be added later with `llamactl deploy`.",
        show_default=False,
    ),
    host: str = typer.Option(
        "127.0.0.1",
        "--host",
        metavar="ADDRESS",
        help="Address to listen on. Beyond loopback (e.g. 0.0.0.0) a --token is required.",
    ),
    port: int = typer.Option(
        4501, "--port", metavar="PORT", help="Port to listen on; 0 picks a free one (see the Listening line)."
    ),
    token: str | None = typer.Option(
        None,
        "--token",
        metavar="TOKEN",
        envvar="LLAMACTL_API_TOKEN",
        help="Token every request must carry (Authorization: Bearer TOKEN).",
    ),
    watch: bool = typer.Option(
        False,
        "--watch",
        "-w",
        help="Hot-reload: when a service's Python files (or its `watch` globs) change, start its new code "
        "beside the old and switch once it loads; a broken edit keeps the old code serving. Edits of the "
        "deployment file add, remove or reconfigure services. The server and open streams stay up.",
    ),
) -> None:
    """Start the API server and the given deployments; keep them running until Ctrl-C.

    Each service's workers run as child processes; tasks, sessions and event logs are kept in each
    deployment's .llamactl/ folder, so they survive a restart. Ctrl-C lets running tasks finish,
    then stops everything (a second Ctrl-C stops at once).
    """
    import asyncio

    from llamactl.server.errors import DeploymentConfigError, LlamactlError, WorkflowLoadError

    for file in files or []:
        if not file.is_file():
            fail(f"no deployment file at {file}", "pass the path of a deployment.yml", ExitCode.USAGE)
    token = token or settings(ctx).token
    try:
        with asyncio.Runner(loop_factory=_fast_loop_factory()) as runner:
            runner.run(_serve(host, port, token, files or [], watch))
    except DeploymentConfigError as exc:
        fail(str(exc), "fix the file, then run the command again", ExitCode.CONFIG)
    except WorkflowLoadError as exc:
        fail(
            str(exc),
            "fix the service's code or its `path`, then run the command again",
            ExitCode.WORKFLOW_LOAD,
        )
    except LlamactlError as exc:
        fail(str(exc), None, ExitCode.ERROR)
    except TimeoutError as exc:
        fail(
            f"the deployments' services did not come up in time: {exc}",
            "look at the workers' output above for the reason",
            ExitCode.ERROR,
        )
    except OSError as exc:
        fail(
            f"cannot serve on {host}:{port}: {exc.strerror or exc}",
            "pick another --port (0 picks a free one), or stop what is using it",
            ExitCode.ERROR,
        )
    except asyncio.CancelledError:
        say("Stopped at once.")
        raise typer.Exit(ExitCode.INTERRUPTED) from None


async def _serve(host: str, port: int, token: str | None, files: list[Path], watch: bool) -> None:
    import asyncio
    import signal

    from llamactl.server.apiserver.runner import serve as run_server

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()

    def on_signal() -> None:
        if stop.is_set() and main is not None:
            main.cancel()
            return
        say("Stopping: letting running tasks finish (Ctrl-C again to stop at once)...")
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    try:
        await run_server(
            host=host,
            port=port,
            token=token,
            deployment_files=files,
            on_ready=_on_ready,
            on_event=say,
            stop=stop,
            watch=watch,
        )
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _on_ready(url: str) -> None:
    print(f"Listening on {url}", file=sys.stderr, flush=True)
    say("Ready. Press Ctrl-C to stop.")


def _fast_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when it is installed (several times cheaper per request and per
    socket event than asyncio's own), else the default loop."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop
