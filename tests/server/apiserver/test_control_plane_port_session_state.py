"""The session state of the control-plane port (``POST /sessions/{id}/state``) goes with its session.

Before, :meth:`ControlPlane.delete_session` deleted the session's record and Context but not the
state this port stores beside them, so every deleted session left its state (up to the body
limit) in the store for good, where no route reaches it any more.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from llamactl.server.control_plane import ControlPlane
from tests.server.apiserver.conftest import Running, free_port

pytestmark = pytest.mark.asyncio(loop_scope="module")


YML = """\
name: stateful
control-plane:
  port: {port}
services:
  echo:
    source: {{type: local, location: src}}
    path: flows:echo_workflow
"""


@pytest_asyncio.fixture(loop_scope="module")
async def cp_url(client: httpx.AsyncClient, running: Running) -> AsyncIterator[str]:
    """A deployment of its own: made after ``serve`` froze the GC, so the GC lists its objects."""
    port = free_port()
    created = await client.post(
        "/deployments/create",
        params={"base_path": str(running.app_dir)},
        files={"config_file": ("upload", YML.format(port=port).encode())},
    )
    assert created.status_code == 200, created.text
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await client.delete("/deployments/stateful", timeout=60)


def control_plane(deployment: str) -> ControlPlane:
    found = [cp for cp in gc.get_objects() if isinstance(cp, ControlPlane) and cp.deployment == deployment]
    assert len(found) == 1, found
    return found[0]


async def test_deleting_a_session_deletes_its_state(cp_url: str) -> None:
    async with httpx.AsyncClient(base_url=cp_url, timeout=30) as cp_port:
        session_id = (await cp_port.post("/sessions/create")).json()
        stored = await cp_port.post(f"/sessions/{session_id}/state", json={"big": "x" * 100_000})
        assert stored.status_code == 200, stored.text
        assert (await cp_port.post(f"/sessions/{session_id}/delete")).status_code == 200
        assert (await cp_port.get(f"/sessions/{session_id}/state")).status_code == 404
    left = await control_plane("stateful").records.store.get("stateful/session_state", session_id)
    assert left is None, f"{len(left.value)} bytes of a deleted session's state are kept"
