"""A served deployment hands its workers' results to its control plane without journaling them."""

from __future__ import annotations

import asyncio
import sqlite3
import textwrap
import time
from pathlib import Path

from llamactl.server.deployment import Deployment
from llamactl.server.mq.topics import control_topic, service_topic
from llamactl.server.protocol import final_msg_id
from llamactl.server.types import TaskStatus

DEPLOYMENT = """\
name: direct
services:
  echo:
    name: Echo
    source: {type: local, location: src}
    path: svc:echo
"""


def journal(deployment: Deployment) -> Path:
    return deployment.config.state_dir / "direct.mq.sqlite"


def rows(path: Path, sql: str, *args: object) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as db:
        return list(db.execute(sql, args))


async def test_a_result_is_stored_by_the_control_plane_and_never_written_to_the_journal(
    tmp_path: Path,
) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "svc.py").write_text(
        textwrap.dedent(
            """\
            async def echo(message: str = "") -> str:
                return message
            """
        )
    )
    (tmp_path / "deployment.yml").write_text(DEPLOYMENT)
    async with Deployment.from_file(tmp_path / "deployment.yml", stop_grace=10) as deployment:
        await deployment.wait_ready(timeout=60)
        task = await deployment.run("echo", message="hi", timeout=30)
        assert task.status is TaskStatus.COMPLETED and task.result == "hi"
        path = journal(deployment)
        finals = "SELECT 1 FROM msg WHERE topic = ? AND msg_id = ?"
        assert rows(path, finals, control_topic("direct"), final_msg_id(task.task_id)) == []
        # The task's message is written done once its result is stored (at the next commit).
        pending = "SELECT 1 FROM work WHERE topic = ?"
        deadline = time.monotonic() + 10
        while rows(path, pending, service_topic("direct", "echo")):
            assert time.monotonic() < deadline, "the task's message is still pending in the journal"
            await asyncio.sleep(0.02)
