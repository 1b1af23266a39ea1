from __future__ import annotations

import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from llamactl.server.supervisor import ProcessSpec, Supervisor

from .helpers import REPO_ROOT, Recorder, ScriptFactory, WaitUntil, pid_gone, wait_until


@pytest.fixture
def waiter() -> WaitUntil:
    return wait_until


@pytest.fixture
def gone() -> Callable[[int], bool]:
    return pid_gone


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


@pytest.fixture
async def sup(rec: Recorder) -> AsyncIterator[Supervisor]:
    supervisor = Supervisor(on_event=rec.on_event, output=rec.output, stop_grace=5.0)
    yield supervisor
    await supervisor.close(grace=0.5)


@pytest.fixture
def script(tmp_path: Path) -> ScriptFactory:
    """``script(name, body, *args)``: write ``body`` to a file and return a spec running it."""

    def make(name: str, body: str, *args: str, env: dict[str, str] | None = None) -> ProcessSpec:
        path = tmp_path / f"{name.replace('#', '_')}.py"
        path.write_text(textwrap.dedent(body))
        return ProcessSpec(
            name=name,
            argv=[sys.executable, "-u", str(path), *args],
            env={"PYTHONPATH": str(REPO_ROOT), **(env or {})},
            cwd=tmp_path,
        )

    return make
