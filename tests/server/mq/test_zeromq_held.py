"""ZeroMQ-specific: confirms wait, a few milliseconds at most, to ride with their peer's next message."""

from __future__ import annotations

import asyncio
import time

from llamactl.server.mq.zeromq.held import HeldConfirms

Sent = list[tuple[bytes, list[list[bytes]]]]


def held(sent: Sent, *, hold: float = 0.005, limit: int = 64, fail: bool = False) -> HeldConfirms:
    """Confirms whose sends are recorded in ``sent`` (every send fails with ``fail``)."""

    def send_batch(ident: bytes, messages: list[list[bytes]]) -> bool:
        if fail:
            return False
        sent.append((ident, messages))
        return True

    def send(ident: bytes, frames: list[bytes]) -> bool:
        return send_batch(ident, [frames])

    return HeldConfirms(asyncio.get_running_loop(), send, send_batch, hold=hold, limit=limit)


async def until_sent(sent: Sent, timeout: float = 2.0) -> float:
    started = time.monotonic()
    while not sent:
        assert time.monotonic() - started < timeout, "the held confirm never went"
        await asyncio.sleep(0.001)
    return time.monotonic() - started


async def test_a_held_confirm_goes_after_its_peers_next_message_and_not_again() -> None:
    sent: Sent = []
    confirms = held(sent, hold=0.05)
    confirms.hold(b"w1", [b"PUBACK", b"1"])
    confirms.hold(b"w2", [b"PUBACK", b"2"])
    assert confirms.send(b"w1", [b"DELIVER", b"t2"])
    assert sent == [(b"w1", [[b"DELIVER", b"t2"], [b"PUBACK", b"1"]])]  # one ZeroMQ message
    assert confirms.send(b"w1", [b"DELIVER", b"t3"])
    assert sent[-1] == (b"w1", [[b"DELIVER", b"t3"]])  # nothing waits any more
    sent.clear()
    await until_sent(sent)
    assert sent == [(b"w2", [[b"PUBACK", b"2"]])]  # w1's timer was cancelled with the send
    await asyncio.sleep(0.1)
    assert len(sent) == 1 and len(confirms) == 0


async def test_confirms_whose_message_could_not_go_wait_again() -> None:
    sent: Sent = []
    confirms = held(sent, hold=10.0, fail=True)
    confirms.hold(b"w", [b"PUBACK", b"1"])
    assert not confirms.send(b"w", [b"DELIVER", b"t2"])  # the peer's pipe is full, say
    assert len(confirms) == 1
    assert confirms.take(b"w") == [[b"PUBACK", b"1"]]


async def test_a_confirm_with_no_company_goes_alone_when_the_hold_ends() -> None:
    sent: Sent = []
    confirms = held(sent, hold=0.02)
    confirms.hold(b"w", [b"PUBACK", b"1"])
    confirms.hold(b"w", [b"PUBACK", b"2"])
    assert sent == [] and len(confirms) == 2
    waited = await until_sent(sent)
    assert waited >= 0.015
    assert sent == [(b"w", [[b"PUBACK", b"1"], [b"PUBACK", b"2"]])]


async def test_confirms_past_the_limit_go_at_once() -> None:
    sent: Sent = []
    confirms = held(sent, hold=10.0, limit=3)
    for n in range(3):
        confirms.hold(b"w", [b"PUBACK", bytes([n])])
    assert sent == [(b"w", [[b"PUBACK", b"\x00"], [b"PUBACK", b"\x01"], [b"PUBACK", b"\x02"]])]
    assert len(confirms) == 0


async def test_a_gone_peers_confirms_are_dropped_and_closing_sends_the_rest() -> None:
    sent: Sent = []
    confirms = held(sent, hold=10.0)
    confirms.hold(b"gone", [b"PUBACK", b"1"])
    confirms.hold(b"here", [b"PUBACK", b"2"])
    confirms.forget(b"gone")
    confirms.release_all()
    assert sent == [(b"here", [[b"PUBACK", b"2"]])]
