"""An edit of the deployment file that cannot be started is refused whole (real workers)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from llamactl.server.config import load_deployment_file
from llamactl.server.deployment import Deployment
from llamactl.server.errors import LlamactlError
from llamactl.server.types import TaskStatus

DEPLOYMENT = """\
name: whole
services:
  a:
    name: A
    source: {type: local, location: a}
    path: svc:handle
  b:
    name: B
    source: {type: local, location: b}
    path: svc:handle
"""

# a gets GREETING; b is removed; c is added, its folder not made yet
EDITED = """\
name: whole
services:
  a:
    name: A
    source: {type: local, location: a}
    path: svc:handle
    env: {GREETING: hello}
  c:
    name: C
    source: {type: local, location: c}
    path: svc:handle
"""

SERVICE = textwrap.dedent(
    """\
    import os


    async def handle(message: str = "") -> str:
        return os.environ.get("GREETING", "none")
    """
)


async def _answer(deployment: Deployment, service: str) -> object:
    task = await deployment.run(service, message="hi", timeout=30)
    assert task.status is TaskStatus.COMPLETED, task.error
    return task.result


async def test_an_edit_whose_new_service_cannot_start_changes_nothing(tmp_path: Path) -> None:
    """Before, the edit was half applied: b was removed and c registered with no worker, and
    a's new env was never applied, not even once c's folder was made and the file applied
    again (a counted as unchanged by then), while the watch said the deployment ran as it was."""
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "svc.py").write_text(SERVICE)
    (tmp_path / "deployment.yml").write_text(DEPLOYMENT)
    async with Deployment.from_file(tmp_path / "deployment.yml", stop_grace=5) as deployment:
        await deployment.wait_ready(timeout=60)
        (tmp_path / "deployment.yml").write_text(EDITED)
        with pytest.raises(LlamactlError, match=r"services\.c\.source\.location"):
            await deployment.reconfigure(load_deployment_file(tmp_path / "deployment.yml"))
        assert [s.service_id for s in deployment.services()] == ["a", "b"]
        assert sorted(deployment.config.services) == ["a", "b"]
        assert await _answer(deployment, "b") == "none"

        (tmp_path / "c").mkdir()
        (tmp_path / "c" / "svc.py").write_text(SERVICE)
        outcomes = await deployment.reconfigure(load_deployment_file(tmp_path / "deployment.yml"))
        assert [(o.service_id, o.ok) for o in outcomes] == [("a", True)]
        await deployment.wait_ready(timeout=60, all_replicas=True)
        assert [s.service_id for s in deployment.services()] == ["a", "c"]
        assert await _answer(deployment, "a") == "hello"
        assert await _answer(deployment, "c") == "none"
