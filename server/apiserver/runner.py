"""``llamactl serve``: the API server, its deployments and their control-plane ports, in one loop."""

from __future__ import annotations

import asyncio
import gc
import logging
import warnings
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path

from llamactl.server.aio import cancel_and_wait
from llamactl.server.apiserver.app import create_app
from llamactl.server.apiserver.control_plane_app import create_control_plane_app
from llamactl.server.apiserver.listen import AccessLog, Draining, UvicornServer, is_loopback
from llamactl.server.apiserver.policy import DEFAULT_MAX_BODY_SIZE, AccessPolicy, DeploymentRoots
from llamactl.server.apiserver.watching import Watchers
from llamactl.server.config import DeploymentConfig, load_deployment_file
from llamactl.server.deployment import Deployment
from llamactl.server.deployment.manager import DeploymentManager
from llamactl.server.errors import InvalidRequest

__all__ = ["ControlPlaneServers", "running_tasks", "serve"]

log = logging.getLogger("llamactl.server.apiserver")

EventCallback = Callable[[str], None]
DrainCallback = Callable[[int], None]
WorkerOutput = Callable[[str, str], None]

DRAIN_POLL = 0.2
"""Seconds between two counts of the running tasks while the server drains (for its progress line)."""


class ControlPlaneServers:
    """Serves each deployment's control plane on its ``control-plane.port`` while it runs."""

    def __init__(self, access: AccessPolicy, on_event: EventCallback | None) -> None:
        self._access = access
        self._on_event = on_event
        self._servers: dict[str, tuple[UvicornServer, asyncio.Event]] = {}

    def _say(self, line: str) -> None:
        if self._on_event is not None:
            self._on_event(line)
        else:
            log.info("%s", line)

    async def started(self, deployment: Deployment) -> None:
        settings = deployment.config.control_plane
        if settings.port is None:
            return
        host = settings.host
        if not is_loopback(host) and not self._access.token:
            self._say(
                f"{deployment.name}: control plane asked for {host}:{settings.port} but the server has "
                "no token, so it listens on 127.0.0.1 only (start with --token to expose it)"
            )
            host = "127.0.0.1"
        app = create_control_plane_app(deployment, access=self._access.with_bind_host(host))
        server = UvicornServer(app, host, settings.port)
        await server.start()
        self._servers[deployment.name] = (server, app.state.stopping)
        self._say(f"{deployment.name}: control plane on {server.url}")

    async def stopping(self, deployment: Deployment) -> None:
        entry = self._servers.pop(deployment.name, None)
        if entry is not None:
            server, stopping = entry
            stopping.set()
            await server.stop()

    async def close(self) -> None:
        entries = list(self._servers.values())
        self._servers.clear()
        for server, stopping in entries:
            stopping.set()
            await server.stop()


def _load(file: Path, on_warning: EventCallback | None) -> DeploymentConfig:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = load_deployment_file(file)
    for warning in caught:
        if on_warning is not None:
            on_warning(str(warning.message))
        else:
            log.warning("%s", warning.message)
    return config


async def running_tasks(deployments: Sequence[Deployment]) -> int:
    """How many tasks ``deployments`` have in the ``running`` status (from the stores' counts)."""
    total = 0
    for deployment in deployments:
        try:
            counts = await deployment.control_plane.task_counts()
        except Exception:  # closed meanwhile: its tasks are done
            continue
        total += sum(by_status.get("running", 0) for by_status in counts.values())
    return total


class _DrainReport:
    """Calls ``on_drain(n)`` with the number of running tasks at once, whenever it changes, and
    with 0 once the deployments have stopped (if it had not said 0 yet)."""

    def __init__(self, deployments: Sequence[Deployment], on_drain: DrainCallback) -> None:
        self._deployments = deployments
        self._on_drain = on_drain
        self._last: int | None = None
        self._task = asyncio.create_task(self._follow(), name="drain-report")

    def _say(self, count: int) -> None:
        if count != self._last:
            self._on_drain(count)
            self._last = count

    async def _follow(self) -> None:
        while True:
            self._say(await running_tasks(self._deployments))
            await asyncio.sleep(DRAIN_POLL)

    async def done(self) -> None:
        await cancel_and_wait(self._task)
        self._say(0)


async def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 4501,
    token: str | None = None,
    deployment_files: Sequence[Path] = (),
    on_ready: Callable[[str], None] | None = None,
    on_event: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
    watch: bool = False,
    allowed_hosts: Sequence[str] = (),
    allowed_origins: Sequence[str] = (),
    max_body_size: int = DEFAULT_MAX_BODY_SIZE,
    deployments_roots: Sequence[Path] = (),
    allow_install: bool = False,
    on_warning: EventCallback | None = None,
    on_drain: DrainCallback | None = None,
    access_log: EventCallback | None = None,
    worker_output: WorkerOutput | None = None,
) -> None:
    """Serve the HTTP API until ``stop`` is set, with the deployments of ``deployment_files``.

    With ``watch``, each deployment loaded from a file is hot-reloaded when its sources or the
    file itself change (one ``on_event`` line per reload); the server and its streams stay up.

    Who is served: requests whose ``Host`` is a loopback name, ``host`` itself or one of
    ``allowed_hosts``; browser requests only from ``allowed_origins`` (or the server's own
    pages); bodies up to ``max_body_size`` bytes; with ``token``, only requests that carry it.
    ``/deployments/create`` loads deployments only from under the folders of
    ``deployment_files`` and ``deployments_roots``; ``python-dependencies`` are installed (into
    each deployment's own venv) only with ``allow_install``.

    Runs in the caller's event loop and installs no signal handlers: the caller sets ``stop``
    on SIGINT/SIGTERM. ``port=0`` picks an ephemeral port; ``on_ready`` gets the real URL once
    the API answers and every file is deployed; ``on_event`` gets one line per service that
    comes up; ``on_warning`` each warning about a deployment file (else they are logged).
    ``access_log`` gets one line per HTTP request; ``worker_output`` each line a worker process
    writes, with its replica's name (else workers write to this process's stderr).

    On ``stop`` the server drains: open streams end, every new request is answered 503
    ("stopping"), the deployments stop (their workers finish their running tasks first;
    ``on_drain`` gets the number still running, at once and on every change), and only then do
    the HTTP servers stop.

    Raises:
        InvalidRequest: ``host`` is not a loopback address and no token was given, or an allowed
            host, origin, size or root is malformed.
        CannotListen: the port is taken, or the host is not this machine's or does not resolve.
        DeploymentConfigError, WorkflowLoadError, TimeoutError: a deployment file is wrong or
            its services did not come up (everything started so far is stopped first).
    """
    if not token and not is_loopback(host):
        raise InvalidRequest(
            f"refusing to serve on {host} without a token: anyone who reaches it could run code. "
            "Pass --token or set LLAMACTL_API_TOKEN (clients send the same token), "
            "or bind to 127.0.0.1"
        )
    access = AccessPolicy(
        token=token,
        allowed_hosts=tuple(allowed_hosts),
        allowed_origins=tuple(allowed_origins),
        max_body_size=max_body_size,
    ).with_bind_host(host)
    roots = DeploymentRoots.of(deployment_files, deployments_roots)
    if host.strip("[]") in ("", "0.0.0.0", "::") and not access.allowed_hosts:
        note = (
            f"listening on every address ({host}), but only requests addressed to a loopback name are "
            "served: add --allowed-host NAME for each name or address other machines use to reach this one"
        )
        if on_event is not None:
            on_event(note)
        else:
            log.warning("%s", note)
    stop = stop if stop is not None else asyncio.Event()
    manager = DeploymentManager(allow_install=allow_install, worker_output=worker_output)
    control_planes = ControlPlaneServers(access, on_event)
    manager.add_hooks(control_planes)
    watchers = Watchers(on_event) if watch else None
    if watchers is not None:
        manager.add_hooks(watchers)
    app = create_app(manager, access=access, roots=roots, on_event=on_event)
    draining = Draining(app)
    http = UvicornServer(AccessLog(draining, access_log) if access_log else draining, host, port)
    configs = [_load(Path(file), on_warning) for file in deployment_files]
    # Known before the port opens: a client of a restarted server hears "starting, try again"
    # (503) for each of them until it is up, never "no such deployment" (404).
    manager.expect(config.name for config in configs)

    async def start_deployments() -> None:
        for config in configs:
            await manager.create(config, on_event=on_event)  # says it is ready

    try:
        await http.start()
        if not await _unless_stopped(start_deployments(), stop):
            return  # stopped while a service was still coming up (its code hung at import, say)
        gc.freeze()  # the app, its imports and the deployments live until the end: skip them in GC
        gc.set_threshold(10_000, 20, 20)  # fewer young collections under load
        if on_ready is not None:
            on_ready(http.url)
        await stop.wait()
    finally:
        # Clients keep getting answers while the workers drain: "stopping", not a closed port;
        # waiters answer 503 (with their task's id and status) at once, instead of holding the
        # HTTP server's drain open until their task ends.
        draining.start()
        manager.begin_shutdown()
        app.state.stopping.set()
        # Taken now: the manager forgets each deployment as soon as it starts stopping it.
        stopping = manager.running()
        progress = _DrainReport(stopping, on_drain) if on_drain is not None else None
        try:
            if watchers is not None:
                await watchers.close()
            await control_planes.close()
            await manager.close()
        finally:
            if progress is not None:
                await progress.done()
            await http.stop()


async def _unless_stopped(work: Coroutine[object, object, None], stop: asyncio.Event) -> bool:
    """Run ``work`` until it ends (True; its error is raised) or ``stop`` is set first (False:
    it is cancelled, and what it started is closed by its own cleanup)."""
    working = asyncio.create_task(work, name="llamactl-start")
    stopping = asyncio.create_task(stop.wait(), name="llamactl-stop-wait")
    try:
        await asyncio.wait({working, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if not working.done():
            await cancel_and_wait(working)
    if working.cancelled():
        return False
    working.result()
    return True
