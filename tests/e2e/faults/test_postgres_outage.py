"""The line to PostgreSQL (the deployment's state store) is cut for a few seconds under a real
`llamactl serve`, then restored (a TCP proxy that drops every connection and refuses new ones:
the shared PostgreSQL server may not be stopped).

Meanwhile `/status/` is Unhealthy naming the store and `/metrics` says it is unreachable; a
`llamactl run --stream` that follows a task through the outage prints every event once, in
order, and its result; a `llamactl run` sent during the outage says why it waits and gets its
result once the store answers.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from tests.llamactl.serving import Lines, Server, llamactl, reaped, write_app
from tests.postgres import POSTGRES_DSN, PostgresSchema
from tests.server.mq.tcp_proxy import ProxyThread

TICKS = """
import asyncio


async def ticks(n: int = 10, every: float = 0.2):
    for i in range(int(n)):
        yield {"i": i}
        await asyncio.sleep(float(every))
    yield {"i": int(n), "done": True}
"""


async def test_a_run_and_a_streamed_run_go_through_a_postgresql_outage(tmp_path: Path) -> None:
    pg = PostgresSchema()
    try:
        await asyncio.to_thread(_through_an_outage, tmp_path, pg)
    finally:
        await pg.drop()


def _through_an_outage(tmp_path: Path, pg: PostgresSchema) -> None:
    target = urlsplit(POSTGRES_DSN)
    with ProxyThread(target.hostname or "127.0.0.1", target.port or 5432) as proxy:
        file = write_app(tmp_path / "app", "pgcut", {"func": "funcs:greet", "ticks": "ticks:ticks"})
        (file.parent / "src" / "ticks.py").write_text(TICKS)
        netloc = target.netloc.rsplit("@", 1)[0] + f"@127.0.0.1:{proxy.port}"
        uri = target._replace(netloc=netloc).geturl() + f"?schema={pg.name}"
        text = file.read_text().replace(
            "services:\n", f"control-plane: {json.dumps({'state_store_uri': uri})}\nservices:\n", 1
        )
        file.write_text(text)
        server = Server(file)
        try:
            streamed = llamactl(
                "--server",
                server.url,
                "run",
                "-s",
                "ticks",
                "--stream",
                "-a",
                "n",
                "30",
                "-a",
                "every",
                "0.2",
            )
            with reaped(streamed):
                assert streamed.stdout is not None and streamed.stderr is not None
                out, err = Lines(streamed.stdout), Lines(streamed.stderr)
                out.wait_for(lambda line: '{"i": 2}' in line, 30)
                proxy.stop()
                print("injected: the line to PostgreSQL cut")
                deadline = time.monotonic() + 20
                while (status := httpx.get(f"{server.url}/status/").json())["status"] == "Healthy":
                    assert time.monotonic() < deadline, "the server never said the store is unreachable"
                    time.sleep(0.1)
                assert status["status_message"].startswith(
                    f"deployment 'pgcut': state store postgresql://postgres@127.0.0.1:{proxy.port}/test"
                    " unreachable for "
                ), status
                metrics = httpx.get(f"{server.url}/metrics").text
                assert 'llamactl_state_store_reachable{deployment="pgcut"} 0' in metrics
                listing = httpx.get(f"{server.url}/deployments/pgcut/tasks")
                assert listing.status_code == 503 and listing.json()["unavailable"] == "state_store"
                assert listing.json()["detail"].startswith("the server cannot answer this right now (")
                session = httpx.post(f"{server.url}/deployments/pgcut/sessions/create")
                assert session.status_code == 503 and session.json()["unavailable"] == "state_store"
                assert session.json()["detail"].endswith("nothing was kept, try again in a moment")
                with reaped(
                    llamactl("--server", server.url, "run", "-s", "func", "-a", "name", "Ada")
                ) as run:
                    assert run.stdout is not None and run.stderr is not None
                    said = Lines(run.stderr).wait_for(lambda line: "unreachable" in line, 20)
                    assert said.startswith("The server says: state store postgresql://"), said
                    assert run.poll() is None  # waiting, not failed
                    proxy.start()
                    print("restored: the line to PostgreSQL")
                    assert run.wait(60) == 0, run.stderr.read()
                    assert run.stdout.read().strip() == "hello Ada"
                assert streamed.wait(60) == 0, err.rest()
                lines = out.rest()
            events = [json.loads(line.split("dict", 1)[1]) for line in lines if " dict " in line]
            assert [e["i"] for e in events] == list(range(31)), lines
            assert json.loads(lines[-1]) == {"i": 30, "done": True}
            assert httpx.get(f"{server.url}/status/").json()["status"] == "Healthy"
        finally:
            proxy.start()
            assert server.stop() == 0
