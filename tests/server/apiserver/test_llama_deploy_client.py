"""Llama Deploy 0.9.2's own Python client, installed unchanged in a virtual environment of its own,
drives our server: deploy, status, run, sessions, streamed events, results, human in the loop.

The environment is made once and cached in ``$XDG_CACHE_HOME/llamactl-tests`` (``~/.cache``);
making it needs the package index. If that fails the tests fail: they never skip.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from tests.server.apiserver.conftest import APP, SHARED_FLOWS, start_server

pytestmark = pytest.mark.asyncio(loop_scope="module")

VERSION = "0.9.2"
DRIVER = Path(__file__).parent / "llama_deploy_driver.py"

DEPLOYMENT = """\
name: compat
control-plane:
  port: 8000
default-service: echo
services:
  echo:
    name: Echo
    source: {type: local, name: src}
    path: src/flows:echo_workflow
  stream:
    name: Streaming
    source: {type: local, location: src}
    import-path: src/flows:streaming_workflow
  hitl:
    name: Human
    source: {type: local, location: src}
    path: flows:hitl_workflow
"""
"""A Llama Deploy 0.9 file, with both spellings of source and import path (control-plane is ignored
by 0.9; its port 8000 is never served here because the deployment is uploaded, see below)."""


def _cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "llamactl-tests"


@pytest.fixture(scope="module")
def llama_deploy_python() -> Iterator[Path]:
    """The python of a venv with llama-deploy==0.9.2 (made once, then reused)."""
    folder = _cache() / f"llama-deploy-{VERSION}"
    python = folder / "bin" / "python"
    marker = folder / ".installed"
    folder.parent.mkdir(parents=True, exist_ok=True)
    with (folder.parent / f"llama-deploy-{VERSION}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not marker.exists():
            shutil.rmtree(folder, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
            install = subprocess.run(
                [str(python), "-m", "pip", "install", "--quiet", f"llama-deploy=={VERSION}"],
                capture_output=True,
                text=True,
                timeout=900,
                check=False,
            )
            assert install.returncode == 0, (
                f"cannot install llama-deploy=={VERSION}:\n{install.stdout}\n{install.stderr}"
            )
            marker.write_text(VERSION)
    yield python


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[str, Path]]:
    """An empty server allowed to load from one folder, where a Llama Deploy app waits to be deployed."""
    root = tmp_path_factory.mktemp("compat")
    shutil.copytree(APP / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copyfile(SHARED_FLOWS, root / "src" / "flows.py")
    (root / "deployment.yml").write_text(DEPLOYMENT)
    stop = asyncio.Event()
    url, task = await start_server(stop, deployments_roots=[root])
    try:
        # Llama Deploy's client defaults to http://localhost:4501: use the name, not the address.
        yield url.replace("127.0.0.1", "localhost"), root
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=60)


async def drive(python: Path, url: str, arg: str, step: str) -> Any:
    """Run one step of the driver with Llama Deploy's client; its JSON answer."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLAMA_DEPLOY_", "PYTHON"))}
    proc = await asyncio.create_subprocess_exec(
        str(python),
        "-W",
        "ignore",
        str(DRIVER),
        url,
        arg,
        step,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=180)
    assert proc.returncode == 0, f"Llama Deploy's client failed at {step}:\n{err.decode()[-3000:]}"
    return json.loads(out.decode().strip().splitlines()[-1])


@pytest_asyncio.fixture(loop_scope="module")
async def compat(llama_deploy_python: Path, server: tuple[str, Path]) -> str:
    """The server's url once the app is deployed there (by Llama Deploy's client, if no test of
    this process deployed it yet: xdist may hand this module's tests to both processes, so no
    test may count on another having run first)."""
    url, root = server
    if "compat" not in await _deployments(url):
        await drive(llama_deploy_python, url, str(root / "deployment.yml"), "deploy")
    return url


async def test_its_client_deploys_a_llama_deploy_file(
    llama_deploy_python: Path, server: tuple[str, Path]
) -> None:
    url, root = server
    answer = await drive(llama_deploy_python, url, str(root / "deployment.yml"), "deploy")
    assert answer == {"name": "compat", "status": "Healthy", "deployments": ["compat"], "got": "compat"}


async def test_its_client_runs_a_task(llama_deploy_python: Path, compat: str) -> None:
    assert await drive(llama_deploy_python, compat, "compat", "run") == {"result": "Message received: hi"}


async def test_its_client_creates_lists_gets_uses_and_deletes_a_session(
    llama_deploy_python: Path, compat: str
) -> None:
    answer = await drive(llama_deploy_python, compat, "compat", "sessions")
    assert answer["created"] in answer["listed"] and answer["got"] == "SessionDefinition"
    assert answer["ran"] == "Message received: in session"
    assert answer["created"] not in answer["after"]


async def test_its_client_streams_a_tasks_events_and_reads_its_result(
    llama_deploy_python: Path, compat: str
) -> None:
    answer = await drive(llama_deploy_python, compat, "compat", "events")
    assert [e["n"] for e in answer["events"] if "n" in e] == [0, 1, 2]
    assert answer["result"]["result"] == "3"


async def test_its_client_answers_a_human_in_the_loop_task(llama_deploy_python: Path, compat: str) -> None:
    answer = await drive(llama_deploy_python, compat, "compat", "human")
    assert answer == {"sent": "hitl", "result": "the human said 42"}


async def test_its_llamactl_command_line_works_too(
    llama_deploy_python: Path, compat: str, tmp_path: Path
) -> None:
    url = compat
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path)}  # its llamactl writes a profile there

    async def llamactl(*args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            str(llama_deploy_python.parent / "llamactl"),
            "-s",
            url,
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
        assert proc.returncode == 0, f"its llamactl {' '.join(args)} failed:\n{out.decode()}\n{err.decode()}"
        return out.decode()

    assert "Active deployments:\n- compat" in await llamactl("status")
    assert "Message received: from the cli" in await llamactl(
        "run", "-d", "compat", "-a", "message", "from the cli"
    )
    assert "session_id=" in await llamactl("sessions", "create", "-d", "compat")


async def _deployments(url: str) -> list[str]:
    async with httpx.AsyncClient(base_url=url) as http:
        names: list[str] = (await http.get("/status/")).json()["deployments"]
    return names
