"""``llamactl serve``: the API server, its deployments and their control-plane ports, in one loop."""

from __future__ import annotations

import asyncio
import gc
import logging
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from llamactl.server.apiserver.app import create_app
from llamactl.server.apiserver.control_plane_app import create_control_plane_app
from llamactl.server.apiserver.listen import UvicornServer, is_loopback
from llamactl.server.apiserver.policy import DEFAULT_MAX_BODY_SIZE, AccessPolicy, DeploymentRoots
from llamactl.server.apiserver.watching import Watchers
from llamactl.server.config import DeploymentConfig, load_deployment_file
from llamactl.server.deployment import Deployment
from llamactl.server.deployment.manager import DeploymentManager
from llamactl.server.errors import InvalidRequest

__all__ = ["ControlPlaneServers", "serve"]

log = logging.getLogger("llamactl.server.apiserver")

EventCallback = Callable[[str], None]


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


def _load(file: Path, on_event: EventCallback | None) -> DeploymentConfig:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = load_deployment_file(file)
    for warning in caught:
        if on_event is not None:
            on_event(f"warning: {warning.message}")
        else:
            log.warning("%s", warning.message)
    return config


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
    comes up. On ``stop`` the HTTP servers stop first, then the deployments (workers finish
    their tasks).

    Raises:
        InvalidRequest: ``host`` is not a loopback address and no token was given, or an allowed
            host, origin, size or root is malformed.
        OSError: the port is taken.
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
    manager = DeploymentManager(allow_install=allow_install)
    control_planes = ControlPlaneServers(access, on_event)
    manager.add_hooks(control_planes)
    watchers = Watchers(on_event) if watch else None
    if watchers is not None:
        manager.add_hooks(watchers)
    app = create_app(manager, access=access, roots=roots, on_event=on_event)
    http = UvicornServer(app, host, port)
    try:
        await http.start()
        for file in deployment_files:
            config = _load(Path(file), on_event)
            await manager.create(config, on_event=on_event)
            if on_event is not None:
                on_event(f"deployment '{config.name}' is ready ({len(config.services)} service(s))")
        gc.freeze()  # the app, its imports and the deployments live until the end: skip them in GC
        gc.set_threshold(10_000, 20, 20)  # fewer young collections under load
        if on_ready is not None:
            on_ready(http.url)
        await stop.wait()
    finally:
        # Waiters answer 503 (with their task's id and status) at once, instead of holding the
        # HTTP server's drain open until their task ends.
        manager.begin_shutdown()
        app.state.stopping.set()
        await http.stop()
        if watchers is not None:
            await watchers.close()
        await control_planes.close()
        await manager.close()
