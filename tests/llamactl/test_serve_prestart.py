"""`llamactl serve` starts its workers' interpreters ahead of the server's own start: a replica
runs in one of them exactly as in a process spawned for it, and none outlives the start but the
spares that `--watch` keeps for a hot reload's new workers."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from llamactl.cli.exit_codes import ExitCode
from tests.llamactl.serving import Server, alive, children, llamactl, reaped, waiting_spare

WHERE = """
import os
import sys


async def where() -> dict[str, object]:
    return {
        "cwd": os.getcwd(),
        "greeting": os.environ.get("GREETING"),
        "token": os.environ.get("LLAMACTL_API_TOKEN"),
        "stdin": os.readlink("/proc/self/fd/0"),
        "argv": sys.argv,
    }
"""

TOKEN = "prestart-secret-token"


def _app(folder: Path, *, source: str = "local", replicas: int = 2) -> Path:
    src = folder / "src"
    src.mkdir()
    (src / "places.py").write_text(WHERE)
    file = folder / "deployment.yml"
    file.write_text(
        "name: ahead\n"
        "services:\n"
        "  where:\n"
        f"    source: {{type: {source}, location: src}}\n"
        "    path: places:where\n"
        f"    replicas: {replicas}\n"
        "    env: {GREETING: hi}\n"
    )
    return file


def _environ(pid: int) -> dict[str, str]:
    """The environment ``pid`` started with."""
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


def test_a_replica_runs_in_a_worker_started_ahead_as_in_one_spawned_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLAMACTL_API_TOKEN", TOKEN)  # the server's secret, and what the client sends
    server = Server(_app(tmp_path))
    try:
        workers = children(server.process.pid)
        assert len(workers) == 2, "a worker started ahead and not taken outlived the start"
        for pid in workers:
            started_with = _environ(pid)
            assert started_with.get("LLAMACTL_PRESTARTED") == "1"
            assert "LLAMACTL_API_TOKEN" not in started_with
        with reaped(llamactl("--server", server.url, "run", "-d", "ahead", "-s", "where")) as run:
            out, err = run.communicate(timeout=60)
        assert run.returncode == 0, err
        answer = json.loads(out)
        assert answer["cwd"] == str(tmp_path / "src")
        assert answer["greeting"] == "hi"
        assert answer["token"] is None
        assert answer["stdin"] == "/dev/null"
    finally:
        assert server.stop() == 0


def test_serve_that_refuses_its_file_leaves_no_worker_started_ahead(tmp_path: Path) -> None:
    marker = f"prestart-test-{os.getpid()}-{tmp_path.name}"
    file = _app(tmp_path, source="lokal")
    with llamactl("serve", str(file), "--port", "0", env={"PRESTART_TEST_MARK": marker}) as process:
        _, err = process.communicate(timeout=60)
    assert process.returncode == ExitCode.CONFIG, err
    left = [
        pid
        for pid in (int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit())
        if _marked(pid, marker) and alive(pid)
    ]
    assert left == []


def _marked(pid: int, marker: str) -> bool:
    try:
        return f"PRESTART_TEST_MARK={marker}".encode() in Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False


def test_watch_keeps_a_spare_that_a_reload_s_new_worker_takes(tmp_path: Path) -> None:
    server = Server(_app(tmp_path, replicas=1), extra=["--watch"])
    try:
        [worker, spare] = _waiting_for(server, 2)
        assert not waiting_spare(worker) and waiting_spare(spare)
        (tmp_path / "src" / "places.py").write_text(WHERE.replace('"argv": sys.argv', '"argv": ["v2"]'))
        server.stderr.wait_for(lambda line: "reloaded" in line, 60)
        assert _answer(server)["argv"] == ["v2"]
        [new_worker, new_spare] = _waiting_for(server, 2, without=worker)
        assert new_worker == spare, "the reload spawned its worker instead of taking the spare"
        assert waiting_spare(new_spare) and new_spare != spare
    finally:
        assert server.stop() == 0


def _answer(server: Server) -> dict[str, object]:
    with reaped(llamactl("--server", server.url, "run", "-d", "ahead", "-s", "where")) as run:
        out, err = run.communicate(timeout=60)
    assert run.returncode == 0, err
    answer: dict[str, object] = json.loads(out)
    return answer


def _waiting_for(server: Server, count: int, *, without: int | None = None) -> list[int]:
    """The server's ``count`` children, one of them a spare, once it has them and ``without`` is
    not among them: the workers first, then the spare."""
    deadline = time.monotonic() + 60
    while True:
        found = {pid for pid in children(server.process.pid) if alive(pid)}
        spares = [pid for pid in found if waiting_spare(pid)]
        if len(found) == count and without not in found and len(spares) == 1:
            return sorted(found, key=lambda pid: pid in spares)
        assert time.monotonic() < deadline, (
            f"the server has {found} ({spares} spares), not {count} without {without}"
        )
        time.sleep(0.02)
