"""A deployment's virtual environment deleted while it is served (`git clean -fdx`).

Before: the next worker the supervisor started (after a crash, a reload) found no program; the
service stayed down until the server was restarted, and each try logged a traceback that named
no file ("FileNotFoundError: [Errno 2] No such file or directory")."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from llamactl.server.deployment import Deployment
from llamactl.server.types import TaskStatus
from tests.server.apiserver.test_deploy_policy import DEP, USES_DEP, build_wheel

pytestmark = pytest.mark.slow


def _write(folder: Path) -> Path:
    (folder / "src").mkdir(parents=True)
    (folder / "src" / "uses_dep.py").write_text(USES_DEP)
    build_wheel(folder / "wheels")
    file = folder / "deployment.yml"
    file.write_text(
        "name: repaired\nservices:\n  check:\n    source: {type: local, location: src}\n"
        f"    path: uses_dep:check\n    python-dependencies: ['./wheels/{DEP}-0.1-py3-none-any.whl']\n"
    )
    return file


def _worker_pid(deployment: Deployment) -> int | None:
    assert deployment._supervisor is not None
    pids = [view.pid for view in deployment._supervisor.replicas().values() if view.pid is not None]
    return pids[0] if pids else None


async def test_a_deleted_venv_is_installed_again_and_the_worker_comes_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    file = _write(tmp_path / "app")
    venv = tmp_path / "app" / ".llamactl" / "venv"
    async with Deployment.from_file(file, allow_install=True, stop_grace=5) as deployment:
        await deployment.wait_ready(timeout=120)
        first = await deployment.run("check", timeout=60)
        assert first.status is TaskStatus.COMPLETED, first
        shutil.rmtree(venv)
        pid = _worker_pid(deployment)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        again = await deployment.run("check", timeout=180)
        assert again.status is TaskStatus.COMPLETED, again
        assert isinstance(again.result, dict) and again.result["value"] == 42
        assert (venv / "bin" / "python").exists()
        assert deployment._venv_repair is not None and deployment._venv_repair.repairs == 1
    said = [r.getMessage() for r in caplog.records]
    missing = [m for m in said if "could not start replica" in m]
    assert missing and f"its program is missing: {venv}/bin/python" in missing[0], missing
    assert not any(r.exc_info for r in caplog.records if "could not start" in r.getMessage())
    assert any("was deleted while the server ran: installing" in m for m in said), said
    assert not any("exited with code None" in m for m in said), said


async def test_a_reload_waits_for_the_venv_installed_again(tmp_path: Path) -> None:
    file = _write(tmp_path / "app")
    venv = tmp_path / "app" / ".llamactl" / "venv"
    async with Deployment.from_file(file, allow_install=True, stop_grace=5) as deployment:
        await deployment.wait_ready(timeout=120)
        shutil.rmtree(venv)
        started = time.monotonic()
        outcome = await asyncio.wait_for(deployment.reload_service("check"), 180)
        assert outcome.ok, outcome
        assert time.monotonic() - started < 180
        done = await deployment.run("check", timeout=60)
        assert done.status is TaskStatus.COMPLETED, done
