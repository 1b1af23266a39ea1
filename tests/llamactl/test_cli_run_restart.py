"""`llamactl run` across a server that is killed and started again while its task runs."""

from __future__ import annotations

import time
from pathlib import Path

from llamactl.client import Client
from tests.llamactl.serving import Server, llamactl, reaped, write_app


def _killed(server: Server) -> None:
    server.process.kill()
    server.process.wait()
    server.stderr.rest()
    assert server.process.stderr is not None
    server.process.stderr.close()


def test_run_waits_for_a_restarted_server_and_prints_the_result(tmp_path: Path) -> None:
    """`run` said the server "is not a llamactl server: it does not answer HTTP" (exit 6) when the
    server it was waiting on was killed, though its task, stored, ran again once it was back."""
    file = write_app(tmp_path / "app", "restart", {"slow": "funcs:slow"})
    first = Server(file)
    port = first.url.rsplit(":", 1)[1]
    try:
        with reaped(llamactl("--server", first.url, "run", "-s", "slow", "-a", "seconds", "2")) as run:
            with Client(first.url) as client:
                tasks = client.deployment("restart").tasks
                deadline = time.monotonic() + 60
                while not tasks.list(status="running"):
                    assert time.monotonic() < deadline, "the task never started"
                    time.sleep(0.05)
            _killed(first)
            second = Server(file, extra=["--port", port])
            try:
                out, err = run.communicate(timeout=120)
            finally:
                second.stop()
    finally:
        if first.process.poll() is None:
            _killed(first)
    assert run.returncode == 0, err
    assert out.strip() == "done"
    assert "goes on when the server is back: waiting for it" in err, err
    assert "not a llamactl server" not in err
