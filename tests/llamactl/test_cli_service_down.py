"""A service whose workers cannot come back (its code no longer loads, after a crash): `status`
and a waiting `run` say so. Before, `status` said Healthy and `run` waited its two minutes in
silence, then said only that the task was still queued."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from tests.llamactl.serving import Server, llamactl, reaped, write_app

WORKS = "async def echo(message: str) -> str:\n    return message\n"


def test_status_and_a_waiting_run_say_a_service_s_code_does_not_load(tmp_path: Path) -> None:
    file = write_app(tmp_path / "app", "down", {"echo": "late:echo"})
    module = tmp_path / "app" / "src" / "late.py"
    module.write_text(WORKS)
    server = Server(file)
    try:
        module.write_text("raise ImportError('broken on purpose')\n")
        for pid in server.note_workers():
            os.kill(pid, signal.SIGKILL)  # the restarted worker imports the broken code
        with reaped(llamactl("--server", server.url, "run", "-s", "echo", "hi")) as run:
            assert run.stderr is not None
            said = ""
            for line in run.stderr:
                said += line
                if "The server says:" in line:
                    break
            assert "service 'echo' has had no worker ready for" in said, said
            assert "ImportError: broken on purpose" in said, said
            with reaped(llamactl("--server", server.url, "status")) as status:
                out, _ = status.communicate(timeout=30)
            assert "Unhealthy" in out and "service 'echo' has had no worker ready" in out, out
            module.write_text(WORKS)  # fixed: the next restart of the worker serves the task
            out, err = run.communicate(timeout=90)  # the task waited in the queue meanwhile
        assert run.returncode == 0, err
        assert out.strip() == "hi"
    finally:
        server.stop()
