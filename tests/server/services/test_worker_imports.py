"""A worker process starts with what a worker needs: every replica pays its imports at each
start and each hot reload."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from llamactl.server.deployment import Deployment
from llamactl.server.types import TaskStatus

REPO = Path(__file__).resolve().parents[3]

SERVER_ONLY = (
    "llamactl.server.mq.zeromq.broker",
    "llamactl.server.mq.zeromq.journal",
    "llamactl.server.mq.zeromq.journal_tables",
    "llamactl.server.mq.zeromq.dispatch",
    "llamactl.server.mq.zeromq.subscriptions",
    "llamactl.server.mq.zeromq.work_topics",
    "llamactl.server.mq.zeromq.unix_listener",
)


def test_a_worker_imports_the_queue_client_but_not_the_broker() -> None:
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, sys, llamactl.server.services.__main__; print(json.dumps(sorted(sys.modules)))",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    modules = set(json.loads(probe.stdout.strip().splitlines()[-1]))
    assert "llamactl.server.mq.zeromq.client" in modules
    assert sorted(modules.intersection(SERVER_ONLY)) == []


LOADED = """
import sys


async def loaded() -> list[str]:
    return sorted(n for n in sys.modules if n == "workflows" or n.startswith("workflows."))
"""


async def test_a_function_services_worker_never_loads_workflows(tmp_path: Path) -> None:
    """``workflows`` is a quarter of a worker's start; a service of plain functions runs without
    it, also when its deployment serves workflows in other workers."""
    (tmp_path / "app.py").write_text(LOADED)
    (tmp_path / "flows.py").write_text(
        "from workflows import Workflow, step\n"
        "from workflows.events import StartEvent, StopEvent\n\n\n"
        "class Echo(Workflow):\n"
        "    @step\n"
        "    async def answer(self, ev: StartEvent) -> StopEvent:\n"
        "        return StopEvent(result='flow ran')\n"
    )
    (tmp_path / "deployment.yml").write_text(
        "name: imports\nservices:\n"
        "  fn:\n    source: {type: local, location: .}\n    path: app:loaded\n"
        "  flow:\n    source: {type: local, location: .}\n    path: flows:Echo\n"
    )
    async with Deployment.from_file(tmp_path / "deployment.yml") as deployment:
        await deployment.wait_ready(timeout=60)
        fn = await deployment.run("fn", timeout=30)
        flow = await deployment.run("flow", timeout=30)
    assert fn.status is TaskStatus.COMPLETED, fn.error
    assert fn.result == []
    assert flow.status is TaskStatus.COMPLETED, flow.error
    assert flow.result == "flow ran"
