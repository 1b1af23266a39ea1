"""The anchor: Llama Deploy itself, installed in a cached virtual environment and measured in the same
run as llamactl, with the same client, the same deployment file and the same workflows.

``anchor_python(version)`` installs ``llama-deploy==version`` (plus uvloop and httptools, which
its uvicorn then uses) into ``$XDG_CACHE_HOME/llamactl-bench/llama-deploy-<version>`` the first
time and reuses it after. :func:`measure_product` measures one server, llamactl or Llama Deploy,
on :data:`bench.deployment.ANCHOR_SERVICES`: the workflow echo at every client count, a step that
burns ~5 ms of CPU at 32 clients (llamactl runs it on ``replicas: 2``; Llama Deploy 0.9 runs
everything in its one process) and a step that awaits 50 ms at 64 clients; then the peak RSS of
the server and its one worker serving only the workflow echo.

Llama Deploy 0.9.2's environment runs an older ``llama-index-workflows`` than llamactl's may
(1.3.0: its llama-index-core < 0.14 takes < 2), and the library's cost per run differs between
versions. So :func:`same_library_python` installs llamactl's dependencies beside the version
Llama Deploy runs, and the anchor measures llamactl a second time there: the comparison on the
same workflow, run by the same library.
"""

from __future__ import annotations

import contextlib
import math
import socket
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.cached_env import CachedEnvUnavailable, cached_python, checkout_python, llamactl_requirements
from bench.deployment import ANCHOR_SERVICES, DEPLOYMENT, MEMORY_SERVICES, BenchService, write_deployment
from bench.measure import ECHO_BODY, Throughput, measure_endpoint, wait_first_success
from bench.procfs import tree_usage
from bench.rounds import median_of, median_throughput
from bench.server_proc import ServerProcess

__all__ = [
    "ANCHOR_VERSIONS",
    "AnchorUnavailable",
    "ProductFigures",
    "anchor_argv",
    "anchor_python",
    "llamactl_argv",
    "llamactl_argv_in",
    "measure_legacy",
    "measure_product",
    "median_product",
    "same_library_python",
]

ANCHOR_VERSIONS = ("0.9.2", "0.8.1")
"""Llama Deploy releases the anchor knows how to serve: 0.9.2 (the last, everything in the API
server's process) and 0.8.1 (the last with a control plane, a message queue and services)."""
_EXTRAS = ("uvloop", "httptools")
_RUN_PATH = f"/deployments/{DEPLOYMENT}/tasks/run"
CPU_CLIENTS = 32
CPU_REPLICAS = ANCHOR_SERVICES["cpu"].replicas or 1
"""Worker processes llamactl runs the CPU step on (the floor's CPU step gets as many)."""
IO_CLIENTS = 64

ArgvFor = Callable[[Path], list[str]]
"""The command that serves the deployment file it is given."""


class AnchorUnavailable(CachedEnvUnavailable):
    """Llama Deploy, or llamactl on Llama Deploy's workflows library, could not be installed."""


def anchor_python(version: str = ANCHOR_VERSIONS[0], *, say: Callable[[str], None] = print) -> Path:
    """The interpreter of a virtual environment holding ``llama-deploy==version``; install it once."""
    what = f"llama-deploy=={version}"
    return _install(f"llama-deploy-{version}", [what, *_EXTRAS], what, say)


def same_library_python(workflows: str, *, say: Callable[[str], None] = print) -> Path:
    """The interpreter of a virtual environment holding llamactl's dependencies with
    ``llama-index-workflows==workflows`` (the version Llama Deploy's environment runs); install it
    once. It runs the checkout's sources: see :func:`llamactl_argv_in`."""
    pin = f"llama-index-workflows=={workflows}"
    what = f"llamactl's dependencies with {pin}"
    return _install(f"llamactl-workflows-{workflows}", [*llamactl_requirements(), pin], what, say)


def _install(name: str, requirements: list[str], what: str, say: Callable[[str], None]) -> Path:
    try:
        hint = "check that PyPI answers, or run without --anchor"
        return cached_python(name, requirements, what=what, hint=hint, say=say)
    except CachedEnvUnavailable as exc:
        raise AnchorUnavailable(str(exc)) from None


def anchor_argv(python: Path) -> ArgvFor:
    """Serve a deployment file's folder with Llama Deploy's API server (``bench/anchor_server.py``)."""
    script = Path(__file__).with_name("anchor_server.py")
    return lambda file: [str(python), str(script), str(file.parent)]


def llamactl_argv(file: Path) -> list[str]:
    """Serve a deployment file with ``llamactl serve``."""
    return [sys.executable, "-m", "llamactl", "serve", str(file), "--port", "0"]


def llamactl_argv_in(python: Path) -> ArgvFor:
    """Serve a deployment file with ``llamactl serve`` from the checkout, run by ``python`` (an
    environment from :func:`same_library_python`); its workers inherit the ``PYTHONPATH``."""
    prefix = checkout_python(python)
    return lambda file: [*prefix, "-m", "llamactl", "serve", str(file), "--port", "0"]


@dataclass(slots=True)
class ProductFigures:
    """What was measured on one product."""

    workflow: Throughput
    cpu: Throughput
    io: Throughput
    memory_rss_bytes: int
    """Peak RSS of the server and its workers, serving only the workflow echo on one worker."""
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def io_p99(self) -> float:
        """p99 latency (ms) of the awaited step at :data:`IO_CLIENTS` clients."""
        summary = self.io.loaded.get(IO_CLIENTS)
        return math.nan if summary is None else summary.p99 * 1000


def _free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports: all bound at once, so the kernel cannot hand out one
    twice (ports bound and closed one by one can repeat)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def _legacy_keys(file: Path) -> None:
    """Rewrite ``file`` for Llama Deploy 0.8, which serves a control plane, a message queue and
    each service on ports of their own (free loopback ports here) and knows ``path`` and
    ``source.name`` only."""
    text = file.read_text().replace("import-path:", "path:").replace("location: .}", "location: ., name: .}")
    parts = text.split("    replicas:")
    control_plane, queue, *service_ports = _free_ports(len(parts) + 1)
    text = parts[0] + "".join(
        f"    host: 127.0.0.1\n    port: {port}\n    replicas:{rest}"
        for port, rest in zip(service_ports, parts[1:], strict=True)
    )
    text += (
        f"control-plane: {{host: 127.0.0.1, port: {control_plane}}}\n"
        f"message-queue: {{type: simple, host: 127.0.0.1, port: {queue}}}\n"
    )
    file.write_text(text)


async def _serve(
    argv_for: ArgvFor,
    services: dict[str, BenchService],
    opts_max_concurrency: int,
    folder: Path,
    legacy: bool = False,
) -> ServerProcess:
    file = write_deployment(folder, 1, opts_max_concurrency, services, source_is_folder=True)
    if legacy:
        _legacy_keys(file)
    server = ServerProcess(argv_for(file), cwd=folder, start_timeout=180)
    await server.start()
    try:
        body = {**ECHO_BODY, "service_id": "wf"}
        await wait_first_success(server.host, server.port, _RUN_PATH, body, attempt_timeout=5.0)
    except BaseException as exc:
        await server.stop()
        if isinstance(exc, TimeoutError):
            tail = "\n".join(server.stderr_tail)
            raise TimeoutError(f"{exc}; the server's stderr ended with:\n{tail}") from None
        raise
    return server


async def measure_product(
    argv_for: ArgvFor,
    *,
    clients: Sequence[int],
    duration: float,
    warmup: float,
    max_concurrency: int = 64,
) -> ProductFigures:
    """Serve the anchor deployment with ``argv_for`` and measure it, then the memory deployment."""

    async def load(server: ServerProcess, service: str, counts: Sequence[int]) -> Throughput:
        return await measure_endpoint(
            server.host,
            server.port,
            _RUN_PATH,
            {**ECHO_BODY, "service_id": service},
            clients=counts,
            duration=duration,
            warmup=warmup,
            server_pid=server.pid,
        )

    with tempfile.TemporaryDirectory(prefix="llamactl-anchor-") as tmp:
        server = await _serve(argv_for, dict(ANCHOR_SERVICES), max_concurrency, Path(tmp) / "anchor")
        try:
            workflow = await load(server, "wf", clients)
            cpu = await load(server, "cpu", (CPU_CLIENTS,))
            io = await load(server, "io", (IO_CLIENTS,))
        finally:
            await server.stop()
        server = await _serve(argv_for, dict(MEMORY_SERVICES), max_concurrency, Path(tmp) / "memory")
        try:
            await load(server, "wf", (8,))
            rss = tree_usage(server.pid).peak_rss_bytes
        finally:
            await server.stop()
    return ProductFigures(workflow, cpu, io, rss)


def median_product(runs: Sequence[ProductFigures]) -> ProductFigures:
    """Each figure's median over the rounds that measured one product (see ``bench/rounds.py``)."""
    return ProductFigures(
        median_throughput([r.workflow for r in runs]),
        median_throughput([r.cpu for r in runs]),
        median_throughput([r.io for r in runs]),
        int(median_of([float(r.memory_rss_bytes) for r in runs])),
    )


async def measure_legacy(python: Path, *, duration: float, warmup: float) -> Throughput:
    """Llama Deploy 0.8 (API server, control plane, message queue and service): the workflow
    echo at 1 and 8 clients. Its ``tasks/run`` polls for the result every 0.5 s, so each run
    lasts at least 4 s to see a few tasks."""
    with tempfile.TemporaryDirectory(prefix="llamactl-anchor-") as tmp:
        server = await _serve(anchor_argv(python), dict(MEMORY_SERVICES), 64, Path(tmp), legacy=True)
        try:
            return await measure_endpoint(
                server.host,
                server.port,
                _RUN_PATH,
                {**ECHO_BODY, "service_id": "wf"},
                clients=(1, 8),
                duration=max(duration, 4.0),
                warmup=max(warmup, 1.0),
                server_pid=server.pid,
            )
        finally:
            await server.stop()
