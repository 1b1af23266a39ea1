"""`kill -USR2 <worker pid>`: the worker prints every thread's stack, then where each task it
runs is (its await chain: a thread's stack does not show a coroutine that waits), and runs on.
The server asks the same of a worker whose tasks outlive its stop grace, before it kills it.
A real deployment, its real worker process."""

from __future__ import annotations

import os
import re
from pathlib import Path

from llamactl.server.deployment import Deployment
from llamactl.server.stack_dumps import STACKS_SIGNAL
from llamactl.server.types import TaskDefinition, TaskStatus
from tests.e2e.waiting import eventually

DEPLOYMENT = """\
name: where
services:
  slow:
    source: {type: local, location: src}
    path: slow:slow
"""

SLOW = """\
import asyncio
from pathlib import Path


async def wait_for(flag):
    while not Path(flag).exists():
        await asyncio.sleep(0.05)


async def slow(flag: str) -> str:
    await wait_for(flag)
    return "done"
"""


async def test_the_signal_shows_where_each_running_task_is_and_the_tasks_run_on(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "slow.py").write_text(SLOW)
    (tmp_path / "deployment.yml").write_text(DEPLOYMENT)
    flag = tmp_path / "flag"
    lines: list[str] = []
    async with Deployment.from_file(
        tmp_path / "deployment.yml", stop_grace=5, worker_output=lambda _, line: lines.append(line)
    ) as deployment:
        await deployment.wait_ready(timeout=60)
        [replica] = deployment.services()[0].replicas
        assert replica.pid is not None
        cp = deployment.control_plane
        created = await cp.create_task(TaskDefinition(service_id="slow", input=f'{{"flag": "{flag}"}}'))

        async def running() -> bool:
            return (await cp.get_task(created.task_id)).status is TaskStatus.RUNNING

        await eventually(running, 30)
        os.kill(replica.pid, STACKS_SIGNAL)

        async def said() -> bool:
            return any(created.task_id in line and "runs, in wait_for" in line for line in lines)

        await eventually(said, 30)
        flag.touch()
        done = await cp.wait_for_task(created.task_id, timeout=30)
        assert [r.pid for r in deployment.services()[0].replicas] == [replica.pid]  # the same worker
    text = "\n".join(lines)
    assert "most recent call first" in text  # every thread's stack (faulthandler's)
    header = next(line for line in lines if created.task_id in line and "runs, in" in line)
    assert re.search(r"task \S+ \(attempt 1\) runs, in wait_for \(slow\.py line 7\)$", header), header
    assert 'slow.py", line 11, in slow' in text and "await wait_for(flag)" in text  # its await chain
    assert (done.status, done.result) == (TaskStatus.COMPLETED, "done")  # it ran on


async def test_a_worker_killed_at_the_end_of_its_stop_grace_says_where_its_tasks_were(tmp_path: Path) -> None:
    """Before, its tasks were cut off without a word of where they were stuck."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "slow.py").write_text(SLOW)
    (tmp_path / "deployment.yml").write_text(DEPLOYMENT)
    lines: list[str] = []
    async with Deployment.from_file(
        tmp_path / "deployment.yml", stop_grace=1, worker_output=lambda _, line: lines.append(line)
    ) as deployment:
        await deployment.wait_ready(timeout=60)
        cp = deployment.control_plane
        created = await cp.create_task(
            TaskDefinition(service_id="slow", input=f'{{"flag": "{tmp_path / "never"}"}}')
        )

        async def running() -> bool:
            return (await cp.get_task(created.task_id)).status is TaskStatus.RUNNING

        await eventually(running, 30)
    assert any(
        re.search(rf"task {created.task_id} \(attempt 1\) runs, in wait_for", line) for line in lines
    ), lines
