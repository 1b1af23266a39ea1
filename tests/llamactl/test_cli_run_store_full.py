"""`llamactl run` while the deployment's store refuses writes (a real `llamactl serve` whose
PostgreSQL tables sit on a tmpfs tablespace that fills up): the task cannot be stored, so `run`
says why it waits, sends it again until the store takes it, and prints its result."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from pathlib import Path

from tests.llamactl.serving import Lines, Server, llamactl, reaped, write_app
from tests.postgres import full_disk_tablespace

# Needs new pages (stored out of line, incompressible), and fits in one argument (< 128 KiB).
TEXT = base64.b64encode(os.urandom(90_000)).decode()


async def test_run_waits_for_a_store_refusing_writes_and_sends_its_task_again(tmp_path: Path) -> None:
    async with full_disk_tablespace() as (disk, pg, tablespace):
        file = write_app(tmp_path / "app", "full", {"kinds": "funcs:kinds"})
        store = {"state_store_uri": f"{pg.uri}&default_tablespace={tablespace}"}
        text = file.read_text().replace("services:\n", f"control-plane: {json.dumps(store)}\nservices:\n", 1)
        file.write_text(text)
        server = await asyncio.to_thread(Server, file)
        try:
            disk.fill()
            with reaped(llamactl("--server", server.url, "run", "-a", "text", TEXT)) as run:
                assert run.stderr is not None and run.stdout is not None
                said = Lines(run.stderr)
                line = await asyncio.to_thread(said.wait_for, lambda line: "refusing writes" in line, 60)
                assert not line.startswith("Error"), "\n".join(said.lines)
                assert "state store" in line and "its disk is full" in line, line
                assert run.poll() is None, "run gave up: " + "\n".join(said.lines)
                disk.free()
                code = await asyncio.to_thread(run.wait, 60)
                out = run.stdout.read()
            assert code == 0, "\n".join(said.lines)
            assert json.loads(out) == {"text": "str"}
        finally:
            assert await asyncio.to_thread(server.stop) == 0
