"""RemoteWorkers (`llamactl worker`) giving up on workers that never come up, on a real Redis:
it says why, as `serve` does, with the stack of each worker still importing."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from llamactl.server.config import load_deployment_text
from llamactl.server.deployment.remote_workers import RemoteWorkers
from tests.postgres import PostgresSchema
from tests.server.mq.conftest import REDIS_URL

HANGS_AT_IMPORT = "import time\ntime.sleep(3600)\n"


async def test_a_worker_still_importing_at_its_startup_timeout_is_named_with_its_stack(
    tmp_path: Path, backends: tuple[PostgresSchema, str]
) -> None:
    """Before, it said only "no worker up after 2s for a#...", nothing of what the worker did."""
    _, prefix = backends
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "hangs.py").write_text(HANGS_AT_IMPORT)
    config = load_deployment_text(
        f"name: far\nmessage-queue: {{type: redis, url: '{REDIS_URL}', prefix: '{prefix}'}}\n"
        "services:\n  a: {source: {type: local, location: src}, path: 'hangs:a', startup-timeout: 2}\n",
        base_path=tmp_path,
    )
    printed: list[tuple[str, str]] = []
    workers = RemoteWorkers(config, {"a": 1}, worker_output=lambda *line: printed.append(line), stop_grace=2)
    await workers.start()
    try:
        with pytest.raises(TimeoutError) as caught:
            await asyncio.wait_for(workers.wait_ready(), 30)
        [replica] = workers.replica_ids
        stack = [line for name, line in printed if name == f"far/{replica}"]
    finally:
        await workers.close()
    assert str(caught.value) == (
        f"no worker up after 2s for {replica} (a: still importing hangs:a (where: the stack its "
        "worker printed above): does something there loop, block, or wait for a server at import "
        "time? If its code takes that long to load, raise `startup-timeout` for the service in the "
        "deployment file (now 2 s))"
    )
    where = next(i for i, line in enumerate(stack) if "most recent call first" in line)
    assert re.fullmatch(r'  File ".*/src/hangs\.py", line 2 in <module>', stack[where + 1]), stack
