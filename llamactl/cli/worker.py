"""`llamactl worker`: a deployment's service workers on this host, until Ctrl-C.

For deployments that outgrow one machine: `llamactl serve` runs the API (and the services it
has replicas of), and hosts of their own run more workers of the same deployment file against
its shared message queue.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from llamactl.cli.common import fail
from llamactl.cli.exit_codes import ExitCode

if TYPE_CHECKING:
    from llamactl.cli.serve_output import ServeOutput
    from llamactl.server.deployment.remote_workers import RemoteWorkers

__all__ = ["worker"]

DEFAULT_FILE = Path("deployment.yml")
SHARED_QUEUE_HINT = (
    "give the deployment a shared queue, `message-queue: {type: redis, url: redis://HOST:6379}`, in its "
    "file on the API host and on every worker host"
)


def worker(
    *,
    file: Path = typer.Argument(
        DEFAULT_FILE,
        metavar="FILE",
        help="The deployment file `llamactl serve` runs (the same file and source folders on this host).",
    ),
    services: list[str] | None = typer.Option(
        None,
        "--service",
        "-s",
        metavar="SERVICE",
        help="Run workers of this service; repeatable. [default: every service of the file]",
        show_default=False,
    ),
    replicas: int | None = typer.Option(
        None,
        "--replicas",
        "-r",
        metavar="N",
        min=1,
        help="Workers of each chosen service. [default: the file's replicas, at least 1]",
        show_default=False,
    ),
    grace: float = typer.Option(
        30.0,
        "--grace",
        metavar="SECONDS",
        min=0.0,
        help="On Ctrl-C or SIGTERM, how long running tasks may take to finish before their workers are "
        "killed (their tasks then run again elsewhere).",
    ),
    allow_install: bool = typer.Option(
        False,
        "--allow-install",
        help="Install the services' python-dependencies into the deployment's .llamactl/venv on this host "
        "(as `serve --allow-install`). Without it a service that lists any is refused.",
    ),
    log_level: str = typer.Option(
        "warning",
        "--log-level",
        metavar="LEVEL",
        help="Show the workers' log lines from this level on: debug, info, warning or error.",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only errors (same as --log-level error)."),
) -> None:
    """Run a deployment's service workers on this host until Ctrl-C or SIGTERM.

    They take tasks from the deployment's shared message queue (`message-queue: {type: redis,
    url: ...}`; the embedded zeromq queue cannot be reached from another host) and report to
    whichever `llamactl serve` runs the deployment: its API shows them as replicas. A worker that
    crashes is restarted. Ctrl-C lets running tasks finish (up to --grace seconds), then stops
    (a second Ctrl-C stops at once). A service with `replicas: 0` in the file is served only by
    such workers.
    """
    import asyncio

    from llamactl.cli.process import fast_loop_factory, prepare_process
    from llamactl.cli.serve_output import LEVELS, ServeOutput, logging_to
    from llamactl.server.errors import (
        DeploymentConfigError,
        LlamactlError,
        MessageQueueError,
        WorkflowLoadError,
    )

    level = LEVELS.get(log_level.lower())
    if level is None:
        raise typer.BadParameter(
            f"'{log_level}' is not a level: use one of {', '.join(LEVELS)}", param_hint="--log-level"
        )
    if not file.is_file():
        fail(
            f"no deployment file at {file}",
            "pass the path of the deployment.yml `llamactl serve` runs",
            ExitCode.USAGE,
        )
    prepare_process()
    output = ServeOutput(level=level, quiet=quiet)
    with logging_to(output):
        workers = _workers(file, services or [], replicas, output, grace=grace, allow_install=allow_install)
        output.width = max(output.width, *(len(f"{workers.config.name}/{r}") for r in workers.replica_ids))
        try:
            with output.in_background(), asyncio.Runner(loop_factory=fast_loop_factory()) as runner:
                runner.run(_work(workers, output))
        except DeploymentConfigError as exc:
            fail(str(exc), "fix the file, then run the command again", ExitCode.CONFIG)
        except WorkflowLoadError as exc:
            fail(
                str(exc),
                "fix the service's code or its `path` (or install what it imports on this host), then run "
                "the command again",
                ExitCode.WORKFLOW_LOAD,
            )
        except MessageQueueError as exc:
            fail(
                f"cannot reach the deployment's message queue: {exc}",
                f"check that it runs and that `message-queue` in {file} points at it",
                ExitCode.ERROR,
            )
        except TimeoutError as exc:
            fail(f"the workers did not come up in time: {exc}", "look at their output above", ExitCode.ERROR)
        except LlamactlError as exc:
            fail(str(exc), None, ExitCode.ERROR)
        except asyncio.CancelledError:
            output.line("Stopped at once.")
            raise typer.Exit(ExitCode.INTERRUPTED) from None
    output.line("Stopped.")


def _workers(
    file: Path,
    services: list[str],
    replicas: int | None,
    output: ServeOutput,
    *,
    grace: float,
    allow_install: bool,
) -> RemoteWorkers:
    """The workers to run, or a refusal: a bad file, an unknown service, a queue no other host reaches."""
    from llamactl.server.config import load_deployment_file
    from llamactl.server.deployment.remote_workers import RemoteWorkers, choose_replicas
    from llamactl.server.errors import (
        DeploymentConfigError,
        MessageQueueError,
        QueueNotShared,
        ServiceNotFound,
    )

    try:
        config = load_deployment_file(file)
    except DeploymentConfigError as exc:
        fail(str(exc), "fix the file, then run the command again", ExitCode.CONFIG)
    try:
        plan = choose_replicas(config, services, replicas)
    except ServiceNotFound as exc:
        fail(
            str(exc),
            "pass one of them with --service, or leave --service out to run them all",
            ExitCode.NOT_FOUND,
        )
    try:
        return RemoteWorkers(
            config,
            plan,
            on_event=output.event,
            worker_output=output.worker,
            stop_grace=grace,
            allow_install=allow_install,
        )
    except QueueNotShared as exc:
        fail(f"{exc}, not workers on another host", SHARED_QUEUE_HINT, ExitCode.CONFIG)
    except MessageQueueError as exc:
        fail(str(exc), f"fix `message-queue` in {file}", ExitCode.CONFIG)


async def _work(workers: RemoteWorkers, output: ServeOutput) -> None:
    import asyncio
    import signal

    from llamactl.server.deployment.remote_workers import queue_location
    from llamactl.server.stop_signals import handling_stop_signals

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set() and main is not None:
            main.cancel()
            return
        stop.set()  # first: saying so must never keep the workers from stopping
        why = "the terminal closed (SIGHUP); " if sig == signal.SIGHUP else ""
        output.line(
            f"Stopping: {why}letting running tasks finish (up to {workers.stop_grace:g} s; Ctrl-C again "
            "to stop at once)..."
        )

    with handling_stop_signals(loop, on_signal):
        try:
            plan = ", ".join(f"{count} x {sid}" for sid, count in workers.replicas.items())
            where = queue_location(workers.queue_config)
            output.line(f"Working for {workers.config.name} ({plan}) on {where}")
            await workers.start()
            ready = asyncio.create_task(workers.wait_ready())
            stopping = asyncio.create_task(stop.wait())
            try:
                await asyncio.wait({ready, stopping}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                ready.cancel()
                stopping.cancel()
            if ready.done() and not ready.cancelled():
                ready.result()
                if not output.quiet:
                    output.line("Ready. Press Ctrl-C to stop.")
            await stop.wait()
        finally:
            await workers.close()
