"""A deployment still being created when the server stops is stopped with it, not left behind.

Before, the server stopped the deployments that were up when it began to stop; one that an
upload was still starting came up a moment later, after that, and nothing ever stopped it: its
workers outlived ``serve()`` and its control-plane port stayed open.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from pathlib import Path

import httpx
import pytest

from llamactl.server.apiserver.runner import serve
from tests.llamactl.serving import write_app
from tests.server.apiserver.conftest import free_port

pytestmark = pytest.mark.asyncio(loop_scope="module")

SLOW_IMPORT = """
import os
import time

print(f"importing in pid {os.getpid()}", flush=True)
time.sleep(1.5)  # still starting when the server is told to stop


async def greet(name: str = "world") -> str:
    return f"hello {name}"
"""


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


async def test_a_deployment_created_while_the_server_stops_is_stopped_too(tmp_path: Path) -> None:
    file = write_app(tmp_path / "app", "late", {"greet": "slowly:greet"})
    (tmp_path / "app" / "src" / "slowly.py").write_text(SLOW_IMPORT)
    cp_port = free_port()
    upload = file.read_text() + f"control-plane:\n  port: {cp_port}\n"
    port = free_port()
    stop = asyncio.Event()
    pids: list[int] = []
    importing = asyncio.Event()

    def worker_output(replica: str, line: str) -> None:
        if line.startswith("importing in pid "):
            pids.append(int(line.rsplit(" ", 1)[1]))
            importing.set()

    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    serving = asyncio.create_task(
        serve(
            port=port,
            stop=stop,
            deployments_roots=[tmp_path],
            worker_output=worker_output,
            on_ready=ready.set_result,
        )
    )
    try:
        url = await asyncio.wait_for(ready, 60)
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            creating = asyncio.create_task(
                client.post(
                    "/deployments/create",
                    params={"base_path": str(tmp_path / "app")},
                    files={"config_file": ("upload", upload.encode())},
                )
            )
            await asyncio.wait_for(importing.wait(), 60)
            stop.set()
            await asyncio.wait_for(serving, 60)
            answer = await asyncio.wait_for(creating, 60)
        assert answer.status_code == 503, answer.text
        assert not listening(cp_port), "the control-plane port outlived the server"
        assert not [pid for pid in pids if alive(pid)], "a worker outlived the server"
    finally:
        stop.set()
        if not serving.done():
            await asyncio.wait_for(serving, 60)
        for pid in pids:
            if alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
