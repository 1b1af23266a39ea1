"""`llamactl serve` whose stderr nobody reads: `serve 2>&1 | less` left on its first page, Ctrl-S
in a terminal, a log collector that hangs.

Before: once the pipe was full, the next line the server wrote (a worker's print, a log record)
blocked its event loop: no HTTP answer, no task, until someone read."""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from llamactl.client import Client
from llamactl.client.errors import DeploymentStarting, ServerUnreachable
from tests.llamactl.serving import REPO, reaped, write_app

CHATTY = """
def chatty(n: int = 1) -> str:
    for i in range(n):
        print(f"line {i} " + "x" * 1000, flush=True)
    return "ok"
"""
F_SETPIPE_SZ = 1031  # Linux: set a pipe's capacity


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_ready(url: str, serve: subprocess.Popen[bytes]) -> None:
    """Until the deployment takes tasks."""
    deadline = time.monotonic() + 90
    with Client(url, timeout=10) as client:
        while True:
            assert serve.poll() is None, "serve exited"
            try:
                client.deployment("chatty").tasks.run({"n": 0}, service="chatty")
                return
            except (DeploymentStarting, ServerUnreachable):
                assert time.monotonic() < deadline, "serve never got ready"
                time.sleep(0.1)


def test_serve_answers_and_runs_tasks_while_nobody_reads_its_stderr(tmp_path: Path) -> None:
    file = write_app(tmp_path / "app", "chatty", {"chatty": "chatty:chatty"})
    (tmp_path / "app" / "src" / "chatty.py").write_text(CHATTY)
    read_end, write_end = os.pipe()
    fcntl.fcntl(read_end, F_SETPIPE_SZ, 4096)  # full after four lines
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "llamactl", "serve", str(file), "--port", str(port)]
    serve = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=write_end)
    os.close(write_end)
    read: list[bytes] = []
    with reaped(serve):  # type: ignore[arg-type]
        _wait_ready(url, serve)
        with Client(url, timeout=60) as client:
            tasks = client.deployment("chatty").tasks
            for _ in range(3):  # 3 MB of lines: three times what waits at most
                assert tasks.run({"n": 1000}, service="chatty", timeout=60) == "ok"
            assert client.status().status.value == "Healthy"
        reader = threading.Thread(target=lambda: read.extend(iter(lambda: os.read(read_end, 65536), b"")))
        reader.start()
        serve.send_signal(signal.SIGINT)
        assert serve.wait(60) == 0
        reader.join(30)
    os.close(read_end)
    text = b"".join(read).decode()
    assert "lines not shown here: stderr was not read fast enough" in text
    assert text.rstrip().endswith("Stopped.")
