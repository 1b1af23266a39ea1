"""`llamactl serve`: the API server, its deployments and their workers, until Ctrl-C."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from llamactl.cli.common import fail, settings
from llamactl.cli.exit_codes import ExitCode

if TYPE_CHECKING:
    from llamactl.cli.serve_output import ServeOutput

__all__ = ["serve"]

DEFAULT_FILE = Path("deployment.yml")


def serve(
    ctx: typer.Context,
    *,
    files: list[Path] | None = typer.Argument(
        None,
        metavar="FILE",
        help="Deployment files (deployment.yml) to start with the server. Llama Deploy files load as they "
        "are. More can be added later with `llamactl deploy`.  [default: ./deployment.yml when there is "
        "one]",
        show_default=False,
    ),
    host: str = typer.Option(
        "127.0.0.1",
        "--host",
        metavar="ADDRESS",
        help="Address to listen on. Beyond loopback (e.g. 0.0.0.0) a --token is required.",
    ),
    port: int = typer.Option(
        4501,
        "--port",
        metavar="PORT",
        envvar="LLAMACTL_PORT",
        help="Port to listen on; 0 picks a free one (see the Listening line).",
    ),
    token: str | None = typer.Option(
        None,
        "--token",
        metavar="TOKEN",
        envvar="LLAMACTL_API_TOKEN",
        help="Token every request must carry (Authorization: Bearer TOKEN).",
    ),
    allowed_hosts: list[str] | None = typer.Option(
        None,
        "--allowed-host",
        metavar="NAME",
        help="Also answer requests addressed to this host name (Host header); repeatable. Loopback names "
        "and --host are always served; others are refused, so a web page cannot reach the server through "
        "DNS rebinding. *.example.com matches subdomains; * any name (needs --token).",
        show_default=False,
    ),
    allow_origins: list[str] | None = typer.Option(
        None,
        "--allow-origin",
        metavar="ORIGIN",
        help="Let web pages of this origin (e.g. http://localhost:3000) call the API from a browser; "
        "repeatable. Requests from any other page are refused.",
        show_default=False,
    ),
    max_body_size: str = typer.Option(
        "4M",
        "--max-body-size",
        metavar="SIZE",
        help="Largest request body accepted (bytes, or 512K, 16M, 1G).",
    ),
    deployments_roots: list[Path] | None = typer.Option(
        None,
        "--deployments-root",
        metavar="DIR",
        help="Let `llamactl deploy` load deployments from under this folder too; repeatable. By default only "
        "the folders of the FILEs given here are allowed.",
        show_default=False,
    ),
    allow_install: bool = typer.Option(
        False,
        "--allow-install",
        help="Install the services' python-dependencies (into each deployment's own .llamactl/venv). "
        "Without it a deployment that lists any is refused.",
    ),
    watch: bool = typer.Option(
        False,
        "--watch",
        "-w",
        help="Hot-reload: when a service's Python files (or its `watch` globs) change, start its new code "
        "beside the old and switch once it loads; a broken edit keeps the old code serving. Edits of the "
        "deployment file add, remove or reconfigure services. The server and open streams stay up.",
    ),
    log_level: str = typer.Option(
        "warning",
        "--log-level",
        metavar="LEVEL",
        help="Show the workers' and the server's log lines from this level on: debug, info, warning or "
        "error. What a worker prints itself (and a crash's traceback) counts as a warning.",
    ),
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="Print only errors and the Listening line (same as --log-level error)."
    ),
    access_log: bool = typer.Option(
        False, "--access-log", help='One line per HTTP request: client, "METHOD PATH", status, time.'
    ),
) -> None:
    """Start the API server and the given deployments; keep them running until Ctrl-C.

    Each service's workers run as child processes; tasks, sessions and event logs are kept in each
    deployment's .llamactl/ folder, so they survive a restart. Ctrl-C lets running tasks finish,
    then stops everything (a second Ctrl-C stops at once).
    """
    import asyncio

    from llamactl.cli.process import fast_loop_factory, prepare_process
    from llamactl.cli.serve_output import LEVELS, ServeOutput, logging_to
    from llamactl.server.errors import (
        DeploymentConfigError,
        LlamactlError,
        QueueConfigError,
        WorkflowLoadError,
    )
    from llamactl.server.file_faults import advice
    from llamactl.server.sizes import parse_size

    level = LEVELS.get(log_level.lower())
    if level is None:
        raise typer.BadParameter(
            f"'{log_level}' is not a level: use one of {', '.join(LEVELS)}", param_hint="--log-level"
        )
    if not files and DEFAULT_FILE.is_file():
        files = [DEFAULT_FILE]
    for file in files or []:
        if not file.is_file():
            fail(f"no deployment file at {file}", "pass the path of a deployment.yml", ExitCode.USAGE)
    prepare_process()
    services = _rough_services(files or [])
    replicas = _local_replicas(services.values())
    output = ServeOutput(level=level, quiet=quiet, keys=list(services))
    try:
        options: dict[str, Any] = {
            "token": token or settings(ctx).token,
            "allowed_hosts": allowed_hosts or [],
            "allowed_origins": allow_origins or [],
            "max_body_size": parse_size(max_body_size),
            "deployments_roots": deployments_roots or [],
            "allow_install": allow_install,
        }
    except ValueError as exc:
        fail(f"--max-body-size {exc}", None, ExitCode.USAGE)
    if access_log and not quiet:
        options["access_log"] = output.access
    try:
        with (
            output.in_background(),
            logging_to(output),
            asyncio.Runner(loop_factory=fast_loop_factory()) as runner,
        ):
            runner.run(
                _serve(
                    host,
                    port,
                    files or [],
                    watch=watch,
                    options=options,
                    output=output,
                    workers_ahead=min(sum(replicas), MAX_WORKERS_AHEAD),
                    spares=min(max(replicas, default=0), MAX_SPARES) if watch else 0,
                )
            )
    except DeploymentConfigError as exc:
        fail(str(exc), "fix the file, then run the command again", ExitCode.CONFIG)
    except QueueConfigError as exc:
        fail(
            str(exc),
            "fix `message-queue` in the deployment file, then run the command again",
            ExitCode.CONFIG,
        )
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
    except OSError as exc:  # a file or process the server could not open, never the port (CannotListen)
        fail(f"cannot serve: {exc}", advice(exc), ExitCode.ERROR)
    except asyncio.CancelledError:
        output.line("Stopped at once.")
        raise typer.Exit(ExitCode.INTERRUPTED) from None
    output.line("Stopped.")


async def _serve(
    host: str,
    port: int,
    files: list[Path],
    *,
    watch: bool,
    options: dict[str, Any],
    output: ServeOutput,
    workers_ahead: int,
    spares: int,
) -> None:
    import asyncio
    import signal

    from llamactl.server.services.command import prestart_template
    from llamactl.server.supervisor import prestart

    # First, before this process imports the server: the workers' interpreters import meanwhile.
    await prestart.prestart(prestart_template(), workers_ahead, output=output.worker)
    loop = asyncio.get_running_loop()
    releasing: set[asyncio.Task[None]] = set()

    def ready(url: str) -> None:
        # The ones no replica took end, but the spares that a hot reload's workers take.
        releasing.add(loop.create_task(prestart.keep(spares)))
        _on_ready(url, output, empty=not files)

    try:
        from llamactl.cli.progress import Spinner
        from llamactl.cli.serve_output import DrainProgress
        from llamactl.server.apiserver.runner import serve as run_server
        from llamactl.server.stop_signals import handling_stop_signals

        stop = asyncio.Event()
        main = asyncio.current_task()
        drain = DrainProgress(output, Spinner("Stopping"))

        def on_signal(sig: signal.Signals) -> None:
            if stop.is_set() and main is not None:
                main.cancel()
                return
            stop.set()  # first: showing the drain must never keep the server from stopping
            drain.begin(hangup=sig == signal.SIGHUP)

        with handling_stop_signals(loop, on_signal):
            try:
                await run_server(
                    host=host,
                    port=port,
                    deployment_files=files,
                    on_ready=ready,
                    on_event=output.event,
                    on_warning=output.warning,
                    on_drain=drain.update,
                    worker_output=output.worker,
                    stop=stop,
                    watch=watch,
                    **options,
                )
            finally:
                drain.end()
    finally:
        await prestart.release()
        await asyncio.gather(*releasing)


def _on_ready(url: str, output: ServeOutput, *, empty: bool) -> None:
    output.line(f"Listening on {url}")
    if not output.quiet:
        output.line("Ready. Press Ctrl-C to stop.")
        if empty:
            output.line(
                "No deployment yet: add one with `llamactl deploy deployment.yml` (or make one with "
                "`llamactl init`)."
            )


def _rough_services(files: list[Path]) -> dict[str, dict[str, Any]]:
    """``deployment/service`` -> its settings, of every service in ``files``, read roughly: only
    to size a column and guess how many workers to start ahead (the real load says what is wrong)."""
    import yaml

    services: dict[str, dict[str, Any]] = {}
    for file in files:
        try:
            data = yaml.safe_load(file.read_text(encoding="utf-8"))
            for service, values in data["services"].items():
                services[f"{data['name']}/{service}"] = values if isinstance(values, dict) else {}
        except Exception:
            continue
    return services


MAX_WORKERS_AHEAD = 8
"""At most this many worker interpreters are started before the deployments are read."""
MAX_SPARES = 4
"""With ``--watch``, at most this many wait for a hot reload's new workers."""


def _local_replicas(services: Iterable[dict[str, Any]]) -> list[int]:
    """The replicas of each service that runs on our own interpreter (one with
    python-dependencies gets its deployment's): how many workers to start ahead."""
    counts = []
    for service in services:
        if service.get("python-dependencies") or service.get("python_dependencies"):
            continue
        replicas = service.get("replicas", 1)
        counts.append(replicas if isinstance(replicas, int) and replicas >= 0 else 1)
    return counts
