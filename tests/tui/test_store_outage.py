"""The dashboard while the deployment's PostgreSQL store refuses writes (a real `llamactl serve`;
its tables on a tablespace of their own, a tmpfs that fills up): the store cannot log its outage
in the change feed, so the server pushes it on the feed, and a banner says which store, since when,
why and what it means, until a write goes through again. Reads are answered meanwhile: the
dashboard stays connected."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import httpx

from llamactl.tui.header.outage import OutageBanner
from tests.llamactl.serving import Server, write_app
from tests.postgres import full_disk_tablespace
from tests.tui.conftest import dashboard, feed_of

BIG = os.urandom(300_000).hex()  # stored out of line (TOAST), not compressible: it needs new pages


async def test_a_banner_shows_while_the_state_store_refuses_writes(tmp_path: Path) -> None:
    async with full_disk_tablespace() as (disk, pg, tablespace):
        file = write_app(tmp_path / "app", "full", {"echo": "flows:echo_workflow"})
        store = {"state_store_uri": f"{pg.uri}&default_tablespace={tablespace}"}
        file.write_text(
            file.read_text().replace("services:\n", f"control-plane: {json.dumps(store)}\nservices:\n", 1)
        )
        server = await asyncio.to_thread(Server, file)
        try:
            async with dashboard(server.url, "full") as dash, httpx.AsyncClient(base_url=server.url) as http:
                banner = dash.app.screen.query_one(OutageBanner)
                assert not banner.shown
                disk.fill()
                task = {"service_id": "echo", "input": json.dumps({"message": BIG})}
                refused = await http.post("/deployments/full/tasks/create", json=task, timeout=60)
                assert refused.status_code == 503, refused.text
                await dash.until(lambda: banner.shown, "the outage banner", 30)
                text = str(banner.render())
                assert text.startswith(
                    "⚠ The state store postgresql://postgres@127.0.0.1:5432/test is refusing writes (since "
                )
                assert "its disk is full: free disk space" in text
                assert "New tasks are refused (503)" in text
                assert feed_of(dash.app).connected  # the dashboard itself is still live
                disk.free()
                done = await http.post("/deployments/full/tasks/run", json=task, timeout=60)
                assert done.status_code == 200, done.text
                await dash.until(lambda: not banner.shown, "the banner to go", 30)
        finally:
            assert await asyncio.to_thread(server.stop) == 0
