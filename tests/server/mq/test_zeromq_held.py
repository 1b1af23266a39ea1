"""ZeroMQ-specific: confirms wait, a few milliseconds at most, to ride with their peer's next message."""

from __future__ import annotations

import asyncio
import time

from llamactl.server.mq.zeromq.held import HeldConfirms

Sent = list[tuple[bytes, list[list[bytes]]]]


def held(sent: Sent, *, hold: float = 0.005, limit: int = 64) -> HeldConfirms:
    def send_batch(ident: bytes, messages: list[list[bytes]]) -> bool:
        sent.append((ident, messages))
        return True

    return HeldConfirms(asyncio.get_running_loop(), send_batch, hold=hold, limit=limit)


async def until_sent(sent: Sent, timeout: float = 2.0) -> float:
    started = time.monotonic()
    while not sent:
        assert time.monotonic() - started < timeout, "the held confirm never went"
        await asyncio.sleep(0.001)
    return time.monotonic() - started


async def test_a_held_confirm_goes_with_its_peers_next_message_and_not_again() -> None:
    sent: Sent = []
    confirms = held(sent, hold=0.05)
    confirms.hold(b"w1", [b"PUBACK", b"1"])
    confirms.hold(b"w2", [b"PUBACK", b"2"])
    assert confirms.take(b"w1") == [[b"PUBACK", b"1"]]  # the caller sends them with its message
    assert confirms.take(b"w1") is None
    await until_sent(sent)
    assert sent == [(b"w2", [[b"PUBACK", b"2"]])]  # w1's timer was cancelled with the take
    await asyncio.sleep(0.1)
    assert len(sent) == 1 and len(confirms) == 0


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
