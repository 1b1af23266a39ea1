"""A deployment deleted while its control-plane port is still opening leaves no port behind.

Before, :meth:`DeploymentManager.create` ran the start hooks after it let go of the deployment's
lock: a ``DELETE`` that came while the control-plane port was opening ran the stop hooks first
(nothing to stop yet), then the port opened, for a deployment that was gone. It kept listening,
answering for a closed control plane, until the server stopped, and a new deployment of that
name could no longer take its port.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from llamactl.server.apiserver.policy import AccessPolicy
from llamactl.server.apiserver.runner import ControlPlaneServers
from llamactl.server.config import load_deployment_file
from llamactl.server.deployment.manager import DeploymentManager
from tests.llamactl.serving import write_app
from tests.server.apiserver.conftest import free_port

pytestmark = pytest.mark.asyncio(loop_scope="module")


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def test_a_delete_while_the_control_plane_port_opens_closes_it(tmp_path: Path) -> None:
    file = write_app(tmp_path / "app", "racy", {"greet": "funcs:greet"})
    port = free_port()
    file.write_text(file.read_text() + f"control-plane:\n  port: {port}\n")
    config = load_deployment_file(file)
    manager = DeploymentManager()
    control_planes = ControlPlaneServers(AccessPolicy(), None)
    manager.add_hooks(control_planes)
    deleting: list[asyncio.Task[None]] = []

    def on_event(line: str) -> None:
        # The deployment is up: a client deletes it right away, while its port is opening.
        if line.startswith("deployment 'racy' is ready") and not deleting:
            deleting.append(asyncio.get_running_loop().create_task(manager.delete("racy")))

    try:
        await asyncio.wait_for(manager.create(config, on_event=on_event), 120)
        assert deleting, "the deployment never said it was ready"
        await asyncio.wait_for(deleting[0], 60)
        assert manager.names() == []
        assert not listening(port), "the control-plane port of a deleted deployment still listens"
    finally:
        for task in deleting:
            if not task.done():
                await asyncio.wait_for(task, 60)
        await control_planes.close()
        await manager.close()
