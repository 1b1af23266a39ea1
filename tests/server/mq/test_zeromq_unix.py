"""The broker's Unix socket for workers on its machine: who gets in, the stream's framing, a
client gone the moment its connection ends, a client that cannot reach it. (The contract suite
runs over it as the ``zeromq-unix`` backend.)"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import struct
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from llamactl.server.errors import PublishRejected
from llamactl.server.mq.factory import connect_queue
from llamactl.server.mq.zeromq import ZeroMQBroker, ZeroMQQueue, unix_listener
from llamactl.server.mq.zeromq.packing import pack, unpack
from llamactl.server.mq.zeromq.records import HELLO, REFUSED, Records
from llamactl.server.mq.zeromq.security import CurveKeys

from .test_contract import REPO, WORK, within

_LENGTH = struct.Struct(">I")


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[ZeroMQBroker]:
    # a long patience: a client gone must be seen from its connection, not from its silence
    b = ZeroMQBroker(journal_path=tmp_path / "j.sqlite", heartbeat_interval=5.0)
    await b.start()
    try:
        yield b
    finally:
        await b.close()


async def started(config: dict[str, Any]) -> ZeroMQQueue:
    q = connect_queue(config)
    assert isinstance(q, ZeroMQQueue)
    await q.start()
    return q


def record(frames: list[bytes]) -> bytes:
    packed = pack(frames)
    return _LENGTH.pack(len(packed)) + packed


async def raw_connection(path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_unix_connection(path)


async def read_record(reader: asyncio.StreamReader) -> list[bytes]:
    (length,) = _LENGTH.unpack(await asyncio.wait_for(reader.readexactly(4), 5))
    return unpack(await asyncio.wait_for(reader.readexactly(length), 5))


async def test_a_client_on_the_brokers_machine_uses_its_unix_socket(broker: ZeroMQBroker) -> None:
    config = broker.client_config
    path = Path(config["unix"])
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700  # only the server's user can reach it
    q = await started(config)
    try:
        assert q.transport == "unix"
        await q.publish(WORK, b"job", msg_id="job")
        d = await within(q.consume(WORK))
        assert d.message.payload == b"job"
        await d.ack()
    finally:
        await q.close()
    await broker.close()
    assert not path.exists() and not path.parent.exists()


async def test_a_client_that_cannot_reach_the_unix_socket_uses_zeromq(broker: ZeroMQBroker) -> None:
    """As on another machine: the socket the config names is not there."""
    q = await started({**broker.client_config, "unix": "/nonexistent/llamactl/broker.unix"})
    try:
        assert q.transport == "zeromq"
        await q.publish(WORK, b"job", msg_id="job")
        assert (await within(q.consume(WORK))).message.payload == b"job"
    finally:
        await q.close()


async def test_a_broker_without_a_unix_socket_names_none(tmp_path: Path) -> None:
    b = ZeroMQBroker(journal_path=None, unix=False)
    await b.start()
    try:
        assert "unix" not in b.client_config
        q = await started(b.client_config)
        assert q.transport == "zeromq"
        await q.close()
    finally:
        await b.close()


async def test_a_client_with_another_brokers_secret_is_refused_and_gets_nothing_in(
    broker: ZeroMQBroker, caplog: pytest.LogCaptureFixture
) -> None:
    config = broker.client_config
    strangers = {**CurveKeys.generate().for_clients(), "server": broker.keys.server_public}
    forger = await started({**config, "curve": strangers})
    try:
        assert forger.transport == "unix"
        with pytest.raises(PublishRejected, match="refused this client: wrong secret"):
            await asyncio.wait_for(forger.publish(WORK, b"FORGED", msg_id="forged"), 5)  # not 10 s
        assert "refused this client: wrong secret" in caplog.text
        with pytest.raises(PublishRejected, match="refused this client"):  # and at once after
            await asyncio.wait_for(forger.publish(WORK, b"FORGED", msg_id="again"), 0.5)
    finally:
        await forger.close()
    q = await started(config)
    try:
        await q.publish(WORK, b"real", msg_id="real")
        assert (await within(q.consume(WORK))).message.msg_id == "real"  # nothing forged before it
    finally:
        await q.close()


async def test_a_connection_must_say_hello_first(broker: ZeroMQBroker) -> None:
    reader, writer = await raw_connection(broker.client_config["unix"])
    writer.write(record([b"PUB", b"\0" * 8, WORK.encode(), b"forged", b"", b"", b"FORGED"]))
    await writer.drain()
    assert await read_record(reader) == [REFUSED, b"the first message must be HELLO ident secret"]
    assert await asyncio.wait_for(reader.read(), 5) == b""  # hung up on
    writer.close()


async def test_a_connection_silent_past_the_hello_time_is_hung_up_on(
    broker: ZeroMQBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(unix_listener, "HELLO_WITHIN", 0.2)
    reader, writer = await raw_connection(broker.client_config["unix"])
    assert await read_record(reader) == [REFUSED, b"no hello in time"]
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


@pytest.mark.parametrize(
    "garbage",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # a length of ~1.2 GB: over the limit
        _LENGTH.pack(3) + b"abc",  # not a packed message
    ],
)
async def test_bytes_that_are_not_the_protocol_end_the_connection(
    broker: ZeroMQBroker, garbage: bytes
) -> None:
    reader, writer = await raw_connection(broker.client_config["unix"])
    secret = broker.keys.client_secret.encode()
    writer.write(record([HELLO, b"craft", secret]) + garbage)
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


async def test_messages_cut_anywhere_by_the_stream_arrive_whole() -> None:
    got: list[list[bytes]] = []
    records = Records(got.extend, lambda _r, _e: None)
    stream = b"".join(record([b"M", str(i).encode(), b"x" * i]) for i in range(50))
    for at in range(0, len(stream), 7):
        records.data_received(stream[at : at + 7])
    assert got == [[b"M", str(i).encode(), b"x" * i] for i in range(50)]


async def test_a_worker_killed_is_gone_at_once_not_after_its_silence(broker: ZeroMQBroker) -> None:
    """The broker's patience here is 15 s; the connection's end tells it within a moment."""
    config = broker.client_config
    q = await started(config)
    await q.publish(WORK, b"job", msg_id="job")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(Path(__file__).with_name("consumer_proc.py")),
        json.dumps(config),
        WORK,
        "60",
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert proc.stdout is not None
        assert (await asyncio.wait_for(proc.stdout.readline(), 15)).split() == [b"GOT", b"job", b"1"]
        proc.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        d = await within(q.consume(WORK, lease=60), timeout=10)
        assert (d.message.msg_id, d.attempt) == ("job", 2)
        assert time.monotonic() - killed < 5  # the connection's end, not 15 s of silence
        await d.ack()
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        await q.close()


async def test_a_second_connection_of_a_client_voids_what_the_first_held(broker: ZeroMQBroker) -> None:
    """A Unix socket only breaks when a process ends or hangs up: what the old connection held
    goes to others, and the client, told by its new session, asks again."""
    path, secret = broker.client_config["unix"], broker.keys.client_secret.encode()
    q = await started(broker.client_config)
    try:
        await q.publish(WORK, b"job", msg_id="job")
        reader, writer = await raw_connection(path)
        writer.write(
            record([HELLO, b"twice", secret])
            + record([b"CONSUME", struct.pack(">I", 1), WORK.encode(), struct.pack(">d", 60.0), b"\0\0\0\1"])
        )
        delivered = await read_record(reader)
        assert delivered[0] == b"DELIVER" and delivered[6] == b"job"
        _, again = await raw_connection(path)
        again.write(record([HELLO, b"twice", secret]) + record([b"HB"]))
        await again.drain()
        d = await within(q.consume(WORK, lease=60), timeout=5)
        assert (d.message.msg_id, d.attempt) == ("job", 2)
        await d.ack()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # the old connection was closed
        writer.close()
        again.close()
    finally:
        await q.close()


async def test_a_unix_socket_path_too_long_is_a_clear_error(tmp_path: Path) -> None:
    b = ZeroMQBroker(journal_path=None, unix_path=tmp_path / ("x" * 120))
    with pytest.raises(Exception, match="cannot listen for local workers on the Unix socket"):
        await b.start()
    await b.close()
