"""A served deployment's broker trusts only its own workers: a forged task.completed from a local
process that does not hold the keys changes nothing."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from llamactl.server.deployment import Deployment
from llamactl.server.mq import topics
from llamactl.server.protocol import WorkerMessage, WorkerMessageKind, final_msg_id
from llamactl.server.types import TaskDefinition, TaskStatus

REPO = Path(__file__).resolve().parents[2]

FORGER = """
import asyncio, json, sys
from llamactl.server.errors import PublishRejected
from llamactl.server.mq.factory import connect_queue

async def main(config, topic, payload, msg_id, key):
    queue = connect_queue({**json.loads(config), "publish_timeout": 2})
    await queue.start()
    try:
        await queue.publish(topic, payload.encode(), msg_id=msg_id, key=key)
        print("ACCEPTED")
    except PublishRejected as exc:
        print("REJECTED", exc)
    finally:
        await queue.close()

asyncio.run(main(*sys.argv[1:]))
"""


async def test_a_forged_result_from_a_process_without_the_keys_is_rejected(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "slow.py").write_text(
        "import asyncio\n\n\nasync def slow() -> str:\n    await asyncio.sleep(3)\n    return 'real'\n"
    )
    (tmp_path / "deployment.yml").write_text(
        "name: trust\nservices:\n  slow:\n    source: {type: local, location: src}\n    path: slow:slow\n"
    )
    async with Deployment.from_file(tmp_path / "deployment.yml") as deployment:
        await deployment.wait_ready(timeout=60)
        cp = deployment.control_plane
        task = await cp.create_task(TaskDefinition(service_id="slow"))
        forged = WorkerMessage(
            kind=WorkerMessageKind.TASK_COMPLETED,
            replica_id="slow#1",
            service_id="slow",
            task_id=task.task_id,
            result="FORGED",
        )
        keyless = {k: v for k, v in deployment.queue_config.items() if k != "curve"}
        forger = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            FORGER,
            json.dumps(keyless),
            topics.control_topic("trust"),
            forged.model_dump_json(),
            final_msg_id(task.task_id),
            task.task_id,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        out, _ = await asyncio.wait_for(forger.communicate(), 60)
        print("forger without the keys:", out.decode().strip())
        assert out.startswith(b"REJECTED"), out
        finished = await cp.wait_for_task(task.task_id, timeout=30)
    assert finished.status is TaskStatus.COMPLETED
    assert finished.result == "real"
