"""`llamactl serve`: run deployments on this machine until Ctrl-C."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from llamactl.cli.exit_codes import ExitCode

if TYPE_CHECKING:
    from server.deployment import Deployment

__all__ = ["serve"]


def serve(
    files: list[Path] = typer.Argument(
        ...,
        help="Deployment files (deployment.yml) to start. Llama Deploy files load as they are.",
        exists=False,
    ),
    ready_timeout: float = typer.Option(
        60.0, "--ready-timeout", help="Seconds to wait for every service to have a ready worker."
    ),
) -> None:
    """Start deployments and keep them running until Ctrl-C.

    Each service's workers run as child processes; tasks, sessions and event logs are kept in the
    deployment's .llamactl/ folder, so they survive a restart. Ctrl-C lets running tasks finish,
    then stops everything.
    """
    from server.errors import DeploymentConfigError, LlamactlError, WorkflowLoadError

    try:
        code = asyncio.run(_serve(files, ready_timeout))
    except DeploymentConfigError as exc:
        _fail(str(exc), "fix the file, then run the command again", ExitCode.CONFIG)
    except WorkflowLoadError as exc:
        _fail(
            str(exc),
            "fix the service's code or its `path`, then run the command again",
            ExitCode.WORKFLOW_LOAD,
        )
    except LlamactlError as exc:
        _fail(str(exc), None, ExitCode.ERROR)
    raise typer.Exit(code)


def _fail(message: str, hint: str | None, code: ExitCode) -> None:
    typer.secho(f"Error: {message}", err=True, fg=typer.colors.RED)
    if hint:
        typer.echo(f"Hint: {hint}", err=True)
    raise typer.Exit(code)


async def _serve(files: list[Path], ready_timeout: float) -> int:
    from server.config import load_deployment_file
    from server.deployment import Deployment

    configs = [load_deployment_file(f) for f in files]
    names = [c.name for c in configs]
    if len(set(names)) != len(names):
        raise _duplicate(names)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    deployments: list[Deployment] = []
    try:
        for config in configs:
            deployment = Deployment(config)
            deployments.append(deployment)
            await deployment.start()
            _say(f"deployment {config.name}: starting {len(config.services)} service(s)")
        for deployment in deployments:
            for status in await deployment.wait_ready(ready_timeout):
                replicas = sum(1 for r in status.replicas if r.state.value == "ready")
                _say(f"  {deployment.name}/{status.service_id}: ready ({replicas} replica(s))")
        _say("Ready. Press Ctrl-C to stop.")
        await stop.wait()
        _say("Stopping: letting running tasks finish...")
        return ExitCode.OK
    finally:
        for deployment in reversed(deployments):
            await deployment.close()


def _duplicate(names: list[str]) -> Exception:
    from server.errors import LlamactlError

    dup = sorted({n for n in names if names.count(n) > 1})
    return LlamactlError(f"two files declare the same deployment name {', '.join(dup)}: names must be unique")


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
