"""ZeroMQ-specific: a message's frames travel packed into one ZeroMQ frame, and a message in
another layout (a peer of another llamactl version, or a forged one) is dropped with a warning
while the broker goes on serving everyone else."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
import zmq

from llamactl.server.mq.factory import connect_queue
from llamactl.server.mq.zeromq import ZeroMQBroker, wire
from llamactl.server.mq.zeromq.client import ZeroMQQueue
from llamactl.server.mq.zeromq.packing import WIRE_VERSION, pack, unpack, unpack_parts
from llamactl.server.mq.zeromq.security import secure_client

FRAMES = [
    [],
    [b""],
    [wire.HB],
    [wire.DELIVER, wire.u32(7), b"lease-1", wire.u32(1), b"work.x", wire.u64(9), b"m", b"k", b"", b"{}"],
    [b"x" * 70_000, b"", b"y"],
    [bytes([n]) for n in range(40)],  # more frames than the ready-made length formats
]


@pytest.mark.parametrize("frames", FRAMES)
def test_frames_come_back_as_they_were_packed(frames: list[bytes]) -> None:
    assert unpack(pack(frames)) == frames


def test_packing_from_an_offset_leaves_the_frames_before_it_out() -> None:
    assert unpack(pack([b"ident", b"CMD", b"arg"], 1)) == [b"CMD", b"arg"]


def test_a_zeromq_message_of_several_packed_frames_is_as_many_messages() -> None:
    one, two = [wire.DELIVER, b"a"], [wire.PUBACK, wire.u64(1), wire.u64(2)]
    assert unpack_parts([pack(one), pack(two)], routed=False) == [one, two]
    assert unpack_parts([b"peer", pack(one), pack(two)], routed=True) == [[b"peer", *one], [b"peer", *two]]


@pytest.mark.parametrize("parts", [[], [b"peer"], [b"peer", b"PUB"]])
def test_a_routed_message_needs_its_peer_and_packed_frames(parts: list[bytes]) -> None:
    with pytest.raises(ValueError):
        unpack_parts(parts, routed=True)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"PUB",  # an unpacked command frame, as an older client sends it
        bytes([WIRE_VERSION + 1]) + pack([b"a"])[1:],  # a newer version
        pack([b"abc"])[:-1],  # cut short
        pack([b"abc"]) + b"!",  # trailing bytes
        pack([b"abc", b"defg"])[:7],  # the lengths cut short
        pack([b"abc"])[:1] + b"\x00\x00\x00\x05" + pack([b"abc"])[5:],  # more frames than there are
    ],
)
def test_anything_else_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError):
        unpack(data)


async def test_a_message_in_the_old_layout_is_dropped_with_one_warning_and_the_broker_serves_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker = ZeroMQBroker(journal_path=tmp_path / "mq.sqlite")
    await broker.start()
    ctx = zmq.Context()
    raw = ctx.socket(zmq.DEALER)
    raw.setsockopt(zmq.LINGER, 0)
    client = connect_queue(broker.client_config)
    assert isinstance(client, ZeroMQQueue)
    try:
        caplog.set_level(logging.WARNING, logger=wire.__name__)
        secure_client(raw, broker.client_config.get("curve"))  # a peer that holds the keys
        raw.connect(broker.client_config["router"])
        old_heartbeat, old_publish = [wire.HB], [wire.PUB, wire.u64(1), b"work.t", b"m1", b"", b"", b"x"]
        for _ in range(3):
            raw.send_multipart(old_publish)  # several frames: the layout before packing
        raw.send(wire.HB)  # one frame, but not a packed one
        raw.send(pack(old_heartbeat))  # the same peer in the current layout is answered
        assert await asyncio.to_thread(raw.poll, 5000), "no answer to a packed heartbeat"
        reply = unpack(raw.recv())
        assert reply[0] == wire.HB and not raw.poll(200), f"only the packed message is answered: {reply}"

        await client.start()
        seq = await asyncio.wait_for(client.publish("work.t", b"payload", msg_id="m2"), 10)
        delivery = await asyncio.wait_for(anext(aiter(client.consume("work.t"))), 10)
        assert (delivery.message.seq, delivery.message.payload) == (seq, b"payload")
        await delivery.ack()

        warnings = [r.getMessage() for r in caplog.records if "wire format" in r.getMessage()]
        assert len(warnings) == 1, warnings
        assert "another llamactl version" in warnings[0] and "Run one version everywhere" in warnings[0]
    finally:
        raw.close(linger=0)
        ctx.term()
        await client.close()
        await broker.close()
