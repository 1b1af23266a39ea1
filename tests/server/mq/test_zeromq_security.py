"""Only the broker's own clients get in: keys made at start (CURVE + ZAP), a private ipc socket."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from llamactl.server.errors import PublishRejected
from llamactl.server.mq.factory import connect_queue
from llamactl.server.mq.zeromq import ZeroMQBroker
from llamactl.server.mq.zeromq.security import BrokerSocket, CurveKeys

REPO = Path(__file__).resolve().parents[3]
WORK = "work.t.svc.a"

FORGER = """
import asyncio, json, sys
from llamactl.server.errors import PublishRejected
from llamactl.server.mq.factory import connect_queue

async def main(config):
    queue = connect_queue({**json.loads(config), "publish_timeout": 1.5})
    await queue.start()
    try:
        await queue.publish("work.t.control", b"FORGED", msg_id="t1:final", key="t1")
        print("ACCEPTED")
    except PublishRejected as exc:
        print("REJECTED", exc)
    finally:
        await queue.close()

asyncio.run(main(sys.argv[1]))
"""


async def test_a_process_without_the_keys_cannot_publish_anything(tmp_path: Path) -> None:
    broker = ZeroMQBroker(journal_path=tmp_path / "j.sqlite")
    await broker.start()
    try:
        keyless = {k: v for k, v in broker.client_config.items() if k != "curve"}
        strangers = CurveKeys.generate().for_clients()
        wrong_key = {**broker.client_config, "curve": {**strangers, "server": broker.keys.server_public}}
        for name, config in (("no keys", keyless), ("someone else's keys", wrong_key)):
            forger = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                FORGER,
                json.dumps(config),
                stdout=asyncio.subprocess.PIPE,
                env={**os.environ, "PYTHONPATH": str(REPO)},
            )
            out, _ = await asyncio.wait_for(forger.communicate(), 60)
            print(f"{name}: {out.decode().strip()}")
            assert out.startswith(b"REJECTED"), out
        # The broker's own client (the keys of client_config) gets in, and nothing forged is there.
        queue = connect_queue(broker.client_config)
        await queue.start()
        try:
            await queue.publish("work.t.control", b"real", msg_id="t1:real", key="t1")
            first = await anext(aiter(queue.consume("work.t.control")))
            assert first.message.payload == b"real"
        finally:
            await queue.close()
    finally:
        await broker.close()


async def test_the_default_socket_is_ipc_in_a_folder_only_its_user_can_open(tmp_path: Path) -> None:
    broker = ZeroMQBroker(journal_path=tmp_path / "j.sqlite")
    await broker.start()
    router = broker.client_config["router"]
    folder = Path(router.removeprefix("ipc://")).parent
    try:
        assert router.startswith("ipc://")
        assert folder.stat().st_mode & 0o777 == 0o700
        assert not broker.beyond_loopback
    finally:
        await broker.close()
    assert not folder.exists()


async def test_a_client_config_without_all_three_keys_is_refused() -> None:
    with pytest.raises(Exception, match="'server' key and the client's 'public' and 'secret'"):
        queue = connect_queue({"type": "zeromq", "router": "ipc:///nowhere", "curve": {"server": "x"}})
        await queue.start()


@pytest.mark.parametrize(
    ("host", "port", "endpoint", "beyond"),
    [
        ("127.0.0.1", None, None, False),
        ("127.0.0.1", 0, None, False),
        ("localhost", 5555, None, False),
        ("0.0.0.0", None, None, True),
        ("192.0.2.10", 0, None, True),
        ("127.0.0.1", None, "tcp://*:5555", True),
        ("127.0.0.1", None, "ipc:///tmp/x.sock", False),
    ],
)
def test_the_broker_knows_when_it_is_reachable_from_other_machines(
    host: str, port: int | None, endpoint: str | None, beyond: bool
) -> None:
    assert BrokerSocket(host=host, port=port, endpoint=endpoint).beyond_loopback is beyond


async def test_publish_with_the_keys_but_to_a_stopped_broker_is_still_rejected_in_time(
    tmp_path: Path,
) -> None:
    broker = ZeroMQBroker(journal_path=tmp_path / "j.sqlite")
    await broker.start()
    config = broker.client_config
    await broker.close()
    queue = connect_queue({**config, "publish_timeout": 0.5})
    await queue.start()
    try:
        with pytest.raises(PublishRejected):
            await queue.publish(WORK, b"x")
    finally:
        await queue.close()
