"""`llamactl validate`: check a deployment file and that every service's code imports and builds.

Nothing is started: no server, no broker, no worker. Each service's `path` is imported in this
process with the service's environment, and adapted the way a worker would (a Workflow, a function
or a generator); its code is not run.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import typer

from llamactl.cli.common import Output, emit_json, fail, output_option, say, warn
from llamactl.cli.exit_codes import ExitCode
from llamactl.cli.style import error_label, ok, use_color

if TYPE_CHECKING:
    from llamactl.server.config import DeploymentConfig, DeploymentConfigWarning

__all__ = ["ServiceCheck", "check_services", "validate"]


@dataclass
class ServiceCheck:
    """What validating one service found: ``kind`` and ``target`` when it loads, else ``error``."""

    service: str
    ok: bool
    kind: str | None = None
    target: str | None = None
    error: str | None = None

    def line(self) -> str:
        if self.ok:
            return f"{self.service}: ok ({self.kind} {self.target})"
        return f"{self.service}: error: {self.error}"


def validate(
    *,
    file: Path = typer.Argument(
        Path("deployment.yml"),
        metavar="FILE",
        help="The deployment file.  [default: deployment.yml]",
        show_default=False,
    ),
    strict: bool = typer.Option(
        False,
        "--strict",
        help="Treat what would be a warning (an unknown key such as a misspelled `default-servce:`, "
        "a key written twice) as an error.",
    ),
    output: Output = output_option(),
) -> None:
    """Check a deployment file, its shared queue's settings (a Redis url) and that each service's
    `path` imports and builds; start nothing.

    Prints one line per service (`echo: ok (workflow EchoWorkflow)`) and exits 0, or says what is
    wrong (the file, line and key; or the import error) and exits non-zero. Unknown keys are
    warnings (Llama Deploy ignores them), errors with --strict.
    """
    from llamactl.server.config import DeploymentConfigWarning, load_deployment_file
    from llamactl.server.errors import DeploymentConfigError

    if not file.exists():
        fail(
            f"no deployment file at {file}",
            "pass the path of a deployment.yml, or create a deployment with `llamactl init`",
            ExitCode.USAGE,
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DeploymentConfigWarning)
        try:
            config = load_deployment_file(file)
        except DeploymentConfigError as exc:
            named = [w for w in caught if f"'{getattr(w.message, 'key_path', '')}' on line" not in str(exc)]
            _report(named, strict=False)
            if output is Output.JSON:
                emit_json({"file": str(file), "ok": False, "error": str(exc), "services": []})
            fail(str(exc), "fix the file, then run `llamactl validate` again", ExitCode.CONFIG)
    problems = _report(caught, strict=strict)
    if problems:
        if output is Output.JSON:
            emit_json({"file": str(file), "ok": False, "error": problems[-1], "services": []})
        fail(problems[-1], "fix the file (or leave out --strict), then validate again", ExitCode.CONFIG)
    if config.message_queue.type != "zeromq":
        from llamactl.server.deployment.queue_config import external_queue_config
        from llamactl.server.errors import MessageQueueError

        try:
            external_queue_config(config, heartbeat_interval=1.0)
        except MessageQueueError as exc:
            if output is Output.JSON:
                emit_json({"file": str(file), "ok": False, "error": str(exc), "services": []})
            fail(str(exc), f"fix `message-queue` in {file}, then validate again", ExitCode.CONFIG)
    try:
        _check_out_git_sources(config)
    except DeploymentConfigError as exc:
        if output is Output.JSON:
            emit_json({"file": str(file), "ok": False, "error": str(exc), "services": []})
        fail(str(exc), "check the repository's URL and ref, and that it can be reached", ExitCode.CONFIG)
    checks = check_services(config)
    failed = [c for c in checks if not c.ok]
    if output is Output.JSON:
        emit_json(
            {
                "file": str(file),
                "deployment": config.name,
                "ok": not failed,
                "services": [asdict(c) for c in checks],
            }
        )
    else:
        color = use_color(sys.stdout)
        for check in checks:
            if check.ok:
                typer.echo(f"{check.service}: {ok().render(color)} ({check.kind} {check.target})")
    if failed:
        color = use_color(sys.stderr)
        for check in failed[:-1]:
            typer.echo(f"{error_label().render(color)} {check.service}: {check.error}", err=True)
        last = failed[-1]
        fail(
            f"{last.service}: {last.error}",
            "fix the service's code or its `path`, then run `llamactl validate` again",
            ExitCode.WORKFLOW_LOAD,
        )
    count = f"{len(checks)} service{'s' if len(checks) != 1 else ''}"
    say(f"{file}: deployment '{config.name}' is valid ({count}).")


def _report(caught: list[warnings.WarningMessage], *, strict: bool) -> list[str]:
    """Print the file's warnings (as errors with ``strict``, the last one left to the caller)."""
    from llamactl.server.config import DeploymentConfigWarning

    found = [w.message for w in caught if isinstance(w.message, DeploymentConfigWarning)]
    if not strict:
        for warning in found:
            warn(str(warning))
        return []
    problems = [_as_error(w) for w in found]
    color = use_color(sys.stderr)
    for problem in problems[:-1]:
        typer.echo(f"{error_label().render(color)} {problem}", err=True)
    return problems


def _as_error(warning: DeploymentConfigWarning) -> str:
    """A warning's words as an error's: what it says is not ignored but refused."""
    where = f"{warning.file}:{warning.line}" if warning.line is not None else warning.file
    problem = warning.problem.replace("unknown key, ignored: ", "unknown key: ")
    return f"{where}: '{warning.key_path}': {problem}"


def _check_out_git_sources(config: DeploymentConfig) -> None:
    """Services whose code is a git repository are imported from a checkout: fetch it first."""
    import asyncio

    from llamactl.server.deployment.git_sources import check_out_git_sources

    asyncio.run(check_out_git_sources(config, say=warn, tell=say))


def check_services(config: DeploymentConfig) -> list[ServiceCheck]:
    """Import and adapt every service of ``config``, in file order; collects every failure."""
    from llamactl.server.errors import LlamactlError

    checks = []
    for service_id in config.services:
        try:
            checks.append(_check(config, service_id))
        except LlamactlError as exc:
            checks.append(ServiceCheck(service=service_id, ok=False, error=str(exc)))
    return checks


def _check(config: DeploymentConfig, service_id: str) -> ServiceCheck:
    from llamactl.server.errors import WorkflowLoadError
    from llamactl.server.services.adapters import FunctionRunnable, adapt
    from llamactl.server.services.loader import load_target

    import_path = config.service(service_id).import_path
    if not import_path:
        raise WorkflowLoadError(
            "no `path` (or `import-path`): set it to module:attr, e.g. `path: workflow:echo_workflow`"
        )
    root = config.import_root(service_id)
    label = f"service '{service_id}' target '{import_path}'"
    with _environment(config.service_env(service_id)):
        try:
            runnable = adapt(load_target(root, import_path), label=label)
        except WorkflowLoadError:
            raise
        except Exception as exc:  # e.g. a Workflow that rejects its own definition when adapted
            raise WorkflowLoadError(f"{label}: {type(exc).__name__}: {exc}") from exc
    if isinstance(runnable, FunctionRunnable):
        kind = runnable.kind.replace("_", " ")
        target = getattr(runnable.fn, "__qualname__", import_path.rpartition(":")[2])
    elif runnable.kind == "workflow":  # its target loaded `workflows`: importing this costs nothing
        from llamactl.server.services.workflow_runs import WorkflowRunnable

        kind, target = "workflow", type(cast(WorkflowRunnable, runnable).workflow).__name__
    else:
        kind, target = runnable.kind, import_path
    return ServiceCheck(service=service_id, ok=True, kind=kind, target=target)


@contextmanager
def _environment(env: dict[str, str]) -> Iterator[None]:
    """The service's `env` and `env-files` set while its module imports, as in its worker."""
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
