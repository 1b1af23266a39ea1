"""The dashboard while the server cannot reach the deployment's Redis queue (a real `llamactl
serve`; the line to the shared Redis is cut and restored through a TCP proxy): a banner says
which queue, since when and what it means, and goes once the queue answers again. The dashboard
stays connected meanwhile: the server, and the store its change feed lives in, are up."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from urllib.parse import urlsplit

from llamactl.tui.header.outage import OutageBanner
from tests.llamactl.serving import Server, write_app
from tests.server.mq.conftest import REDIS_URL, delete_keys
from tests.server.mq.tcp_proxy import ProxyThread
from tests.tui.conftest import dashboard, feed_of

REDIS = urlsplit(REDIS_URL)


async def test_a_banner_shows_while_the_server_cannot_reach_the_queue(tmp_path: Path) -> None:
    prefix = f"llamactl-test-{uuid.uuid4().hex}:"
    with ProxyThread(REDIS.hostname or "127.0.0.1", REDIS.port or 6379) as proxy:
        file = write_app(tmp_path / "app", "cut", {"echo": "flows:echo_workflow"})
        db = REDIS.path.strip("/") or "0"
        queue = {"type": "redis", "url": f"redis://127.0.0.1:{proxy.port}/{db}", "prefix": prefix}
        file.write_text(
            file.read_text().replace("services:\n", f"message-queue: {json.dumps(queue)}\nservices:\n", 1)
        )
        server = await asyncio.to_thread(Server, file)
        try:
            async with dashboard(server.url, "cut") as dash:
                banner = dash.app.screen.query_one(OutageBanner)
                assert not banner.shown
                proxy.stop()
                await dash.until(lambda: banner.shown, "the outage banner", 30)
                text = str(banner.render())
                assert text.startswith(
                    f"⚠ The server cannot reach the message queue redis://127.0.0.1:{proxy.port}/"
                )
                assert "New tasks are stored and wait" in text
                assert feed_of(dash.app).connected  # the dashboard itself is still live
                proxy.start()
                await dash.until(lambda: not banner.shown, "the banner to go", 30)
        finally:
            proxy.start()  # the server's stop says goodbye to Redis
            assert await asyncio.to_thread(server.stop) == 0
            await delete_keys(REDIS_URL, prefix)
