"""The coalescing transport under uvicorn: one write per answer, a stream's head still on time;
and every request bounded: its head in size and time, its body in time, an answer in how long
it may wait for a client that reads none of it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import resource
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route
from uvicorn.server import ServerState

from llamactl.server.apiserver import http_protocol
from llamactl.server.apiserver.errors import CatchAllMiddleware
from llamactl.server.apiserver.http_protocol import MAX_HEAD, CoalescingHttpToolsProtocol
from llamactl.server.apiserver.http_transport import CoalescingTransport
from llamactl.server.apiserver.listen import UvicornServer


class Recording(asyncio.Transport):
    """A transport that records what is written to it and how."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def get_write_buffer_size(self) -> int:
        return 0


async def _next_turn() -> None:
    await asyncio.sleep(0)


async def test_writes_within_one_turn_go_out_as_one() -> None:
    inner = Recording()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())
    transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
    assert inner.writes == []
    assert transport.get_write_buffer_size() == len(b"HTTP/1.1 200 OK\r\n\r\n")
    transport.write(b"body")
    assert inner.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody"]
    await _next_turn()
    assert inner.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody"]  # nothing left to flush


async def test_a_big_body_goes_with_its_head_in_one_call() -> None:
    inner = Recording()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())
    body = b"x" * (1 << 20)
    transport.write(b"head\r\n\r\n")
    transport.write(memoryview(body))
    assert inner.writes == [b"head\r\n\r\n" + body]
    transport.write(body)  # nothing held: a big write is not held either
    assert inner.writes == [b"head\r\n\r\n" + body, body]


async def test_a_lone_write_goes_out_when_the_turn_ends() -> None:
    inner = Recording()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())
    transport.writelines([b"head", b"ers"])
    await _next_turn()
    assert inner.writes == [b"headers"]
    transport.write(b"")  # nothing to hold
    await _next_turn()
    assert inner.writes == [b"headers"]


async def test_close_sends_what_is_held_first_and_abort_drops_it() -> None:
    loop = asyncio.get_running_loop()
    inner = Recording()
    transport = CoalescingTransport(inner, loop)
    transport.write(b"last words")
    transport.close()
    assert inner.writes == [b"last words"] and inner.closed

    inner = Recording()
    transport = CoalescingTransport(inner, loop)
    transport.write(b"never sent")
    transport.abort()
    await _next_turn()
    assert inner.writes == [] and inner.aborted


async def _answer(request: Request) -> JSONResponse:
    return JSONResponse({"echo": (await request.body()).decode()})


@dataclass
class Served:
    """A real uvicorn server with the protocol, and what its routes let a test see or steer."""

    server: UvicornServer
    more: asyncio.Event = field(default_factory=asyncio.Event)
    """Lets ``/stream`` send its second chunk."""
    flood_ended: asyncio.Event = field(default_factory=asyncio.Event)
    """``/flood`` stopped sending (its client went away)."""
    handler_left: asyncio.Event = field(default_factory=asyncio.Event)
    """``/answer`` or ``/late-read`` left, answered or not."""


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    it: Served

    async def answer(request: Request) -> JSONResponse:
        try:
            return await _answer(request)
        finally:
            it.handler_left.set()

    async def late_read(request: Request) -> JSONResponse:
        await asyncio.sleep(1.5)  # the body waits in the socket meanwhile, not by the client's fault
        return await answer(request)

    async def stream(request: Request) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"first\n"
            await it.more.wait()
            yield b"second\n"

        return StreamingResponse(chunks(), media_type="text/plain")

    async def flood(request: Request) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            try:
                while True:
                    yield b"z" * 65536
                    await asyncio.sleep(0)  # as a real stream waits for its next item
            finally:
                it.flood_ended.set()

        return StreamingResponse(chunks(), media_type="text/plain")

    app = Starlette(
        routes=[
            Route("/answer", answer, methods=["POST"]),
            Route("/late-read", late_read, methods=["POST"]),
            Route("/stream", stream),
            Route("/flood", flood),
        ],
        middleware=[Middleware(CatchAllMiddleware)],
    )
    server = UvicornServer(app, "127.0.0.1", 0)
    it = Served(server)
    await server.start()
    try:
        yield it
    finally:
        it.more.set()
        await server.stop()


async def _read_until(reader: asyncio.StreamReader, marker: bytes) -> bytes:
    async with asyncio.timeout(10):
        return await reader.readuntil(marker)


async def test_answers_and_streams_come_whole_over_a_real_server(
    served: Served,
) -> None:
    server, more = served.server, served.more
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        # keep-alive: each answer follows the last; the big one goes as a vectored write
        for body in (b"one", b"two", b"x" * 300_000):
            writer.write(
                b"POST /answer HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: text/plain\r\n"
                b"content-length: %d\r\n\r\n%s" % (len(body), body)
            )
            head = await _read_until(reader, b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 OK")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            assert await reader.readexactly(length) == b'{"echo":"%s"}' % body
        # A stream's head and first chunk arrive while the rest is still to come: a held write
        # goes out when the loop's turn ends, not with the next write.
        writer.write(b"GET /stream HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        assert (await _read_until(reader, b"\r\n\r\n")).startswith(b"HTTP/1.1 200 OK")
        assert await _read_until(reader, b"first\n\r\n") == b"6\r\nfirst\n\r\n"
        more.set()
        assert await _read_until(reader, b"0\r\n\r\n") == b"7\r\nsecond\n\r\n0\r\n\r\n"
    finally:
        writer.close()


async def test_the_protocol_sends_an_answer_in_one_write() -> None:
    """Fails with uvicorn's own protocol, which writes the head and the body apart."""
    app = Starlette(routes=[Route("/answer", _answer, methods=["POST"])])
    config = uvicorn.Config(app, http=CoalescingHttpToolsProtocol, lifespan="off", log_level="warning")
    config.load()
    protocol = config.http_protocol_class(config=config, server_state=ServerState(), app_state={})
    inner = Recording()
    protocol.connection_made(inner)
    protocol.data_received(b"POST /answer HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 2\r\n\r\nhi")
    async with asyncio.timeout(10):
        while not inner.writes:
            await _next_turn()
    await _next_turn()
    assert len(inner.writes) == 1
    assert inner.writes[0].startswith(b"HTTP/1.1 200 OK") and inner.writes[0].endswith(b'{"echo":"hi"}')
    protocol.connection_lost(None)


async def _status_of_answer(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await _read_until(reader, b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    return head.split(b"\r\n")[0], await reader.readexactly(length)


async def test_a_head_without_end_is_refused_with_431_and_the_connection_closed(
    served: Served,
) -> None:
    """uvicorn took header lines without limit: 300 MB of them grew the server by 280 MB."""
    server = served.server
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    line = b"x-junk: " + b"a" * 1000 + b"\r\n"
    try:
        writer.write(b"GET /stream HTTP/1.1\r\nhost: 127.0.0.1\r\n")
        with contextlib.suppress(ConnectionError):
            for _ in range(4 * MAX_HEAD // len(line)):  # four times the limit, a line at a time
                writer.write(line)
                await writer.drain()
        status, body = await _status_of_answer(reader)
        assert status == b"HTTP/1.1 431 Request Header Fields Too Large", status
        assert json.loads(body) == {"detail": f"the request's line and headers take over {MAX_HEAD} bytes"}
        async with asyncio.timeout(10):
            assert await reader.read() == b""  # closed
    finally:
        writer.close()


async def test_heads_under_the_limit_and_bodies_of_any_size_are_served(
    served: Served,
) -> None:
    """Bodies are never counted as head, even pipelined in one write; a head that trickles in
    small pieces counts once."""
    server = served.server
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        body = b"y" * (3 * MAX_HEAD)
        request = (
            b"POST /answer HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: text/plain\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(body), body)
        )
        writer.write(request * 3)
        for _ in range(3):
            assert await _status_of_answer(reader) == (b"HTTP/1.1 200 OK", b'{"echo":"%s"}' % body)
        head = b"POST /answer HTTP/1.1\r\nhost: 127.0.0.1\r\nx-big: " + b"b" * (MAX_HEAD - 200) + b"\r\n"
        for start in range(0, len(head), 1000):
            writer.write(head[start : start + 1000])
            await writer.drain()
            await asyncio.sleep(0)
        writer.write(b"content-length: 2\r\n\r\nhi")
        assert await _status_of_answer(reader) == (b"HTTP/1.1 200 OK", b'{"echo":"hi"}')
    finally:
        writer.close()


async def test_a_head_not_sent_in_time_closes_the_connection_but_a_slow_answer_does_not(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """uvicorn's keep-alive timer restarts on every byte and is not armed on a new connection:
    one that never sends, or sends its head a byte at a time, held its descriptor for ever."""
    monkeypatch.setattr(http_protocol, "HEAD_TIMEOUT", 0.5)
    server, more = served.server, served.more
    silent_reader, silent = await asyncio.open_connection("127.0.0.1", server.port)
    trickle_reader, trickle = await asyncio.open_connection("127.0.0.1", server.port)
    slow_reader, slow = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        slow.write(b"GET /stream HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")  # answered over 1.5 s
        async with asyncio.timeout(10):
            closed = asyncio.create_task(silent_reader.read())
            with contextlib.suppress(ConnectionError):
                for byte in b"GET /answer HTTP/1.1\r\nhost: 127.0.0.1\r\n" * 10:
                    trickle.write(bytes([byte]))
                    await trickle.drain()
                    await asyncio.sleep(0.05)
                    if trickle_reader.at_eof():
                        break
            assert await trickle_reader.read() == b""
            assert await closed == b""
        await asyncio.sleep(1.0)
        more.set()
        assert (await _read_until(slow_reader, b"\r\n\r\n")).startswith(b"HTTP/1.1 200 OK")
        assert await _read_until(slow_reader, b"0\r\n\r\n") == b"6\r\nfirst\n\r\n7\r\nsecond\n\r\n0\r\n\r\n"
    finally:
        for writer in (silent, trickle, slow):
            writer.close()


def _post_head(path: str, length: int) -> bytes:
    return (
        b"POST %s HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n\r\n"
        % (path.encode(), length)
    )


async def test_a_body_that_stops_coming_is_answered_408_and_the_connection_closed(
    served: Served, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A request whose body never ended held its connection and its handler for ever."""
    monkeypatch.setattr(http_protocol, "BODY_TIMEOUT", 0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", served.server.port)
    try:
        writer.write(_post_head("/answer", 100) + b"only ten b")
        status, body = await _status_of_answer(reader)
        assert status == b"HTTP/1.1 408 Request Timeout", status
        assert json.loads(body)["detail"].startswith("the request's body came too slowly: 10 bytes in ")
        async with asyncio.timeout(10):
            assert await reader.read() == b""  # closed
            await served.handler_left.wait()  # the handler waiting for the body is gone too
    finally:
        writer.close()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


async def test_a_slow_but_steady_body_and_one_the_server_holds_back_are_served(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each byte earns time (at BODY_MIN_RATE), and time while the server does not read is not
    the client's: a handler that reads late (here 1.5 s, three times the allowance) gets its body."""
    monkeypatch.setattr(http_protocol, "BODY_TIMEOUT", 0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", served.server.port)
    try:
        writer.write(_post_head("/answer", 3000))
        for _ in range(6):  # 1.2 s for 3,000 bytes: 2,500 bytes a second
            await asyncio.sleep(0.2)
            writer.write(b"s" * 500)
        assert await _status_of_answer(reader) == (b"HTTP/1.1 200 OK", b'{"echo":"%s"}' % (b"s" * 3000))

        monkeypatch.setattr(http_protocol, "BODY_MIN_RATE", 10**12)  # bytes earn nothing now
        body = b"h" * (4 << 20)  # far over what uvicorn reads before it waits for the handler
        writer.write(_post_head("/late-read", len(body)))
        writer.write(body)
        async with asyncio.timeout(20):
            assert await _status_of_answer(reader) == (b"HTTP/1.1 200 OK", b'{"echo":"%s"}' % body)
    finally:
        writer.close()


async def test_a_client_that_reads_nothing_of_an_answer_is_dropped(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream whose client read none of it waited on the full write buffer for ever."""
    monkeypatch.setattr(http_protocol, "SEND_TIMEOUT", 0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", served.server.port, limit=1 << 16)
    try:
        writer.write(b"GET /flood HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        async with asyncio.timeout(20):
            await served.flood_ended.wait()  # its sender stopped: the connection was dropped
            with contextlib.suppress(ConnectionError):
                while await reader.read(1 << 20):
                    pass  # what was on its way, then the end
    finally:
        writer.close()


async def test_a_client_that_leaves_during_its_body_is_no_error(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    """Logged 'unexpected error' with a traceback (starlette's ClientDisconnect), as a bug."""
    reader, writer = await asyncio.open_connection("127.0.0.1", served.server.port)
    writer.write(_post_head("/answer", 100) + b"partial")
    await writer.drain()
    await asyncio.sleep(0.1)  # the handler is waiting for the rest
    writer.close()
    async with asyncio.timeout(10):
        await served.handler_left.wait()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    # and the server goes on serving
    reader, writer = await asyncio.open_connection("127.0.0.1", served.server.port)
    try:
        writer.write(_post_head("/answer", 2) + b"ok")
        assert await _status_of_answer(reader) == (b"HTTP/1.1 200 OK", b'{"echo":"ok"}')
    finally:
        writer.close()


async def test_connections_past_the_limit_are_answered_503_and_closed_at_once(
    served: Served, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Measured under `prlimit --nofile=200`: 300 idle connections took every descriptor for
    their 30 s, and the worker the server had to start again meanwhile could not be started."""
    monkeypatch.setattr(http_protocol, "MAX_CONNECTIONS", 3)
    monkeypatch.setattr(http_protocol, "_warned_at", -http_protocol._WARN_EVERY)
    port = served.server.port
    idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
    try:
        with caplog.at_level(logging.WARNING):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST /answer HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 2\r\n\r\n{}")
            async with asyncio.timeout(10):
                answer = await reader.read()  # the whole answer, then the close
            writer.close()
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503 Service Unavailable"), answer
        assert json.loads(body)["detail"].startswith(
            "the server has 3 connections open, as many as it takes (3;"
        )
        assert "refusing new connections with 503: 3 open, the limit is 3" in caplog.text
        _, spare = idle.pop()
        spare.close()  # one goes: the next connection is served
        async with asyncio.timeout(10):
            while True:  # the server sees the close a moment later
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"POST /answer HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 2\r\n\r\n{}")
                line = await reader.readline()
                writer.close()
                if not line.startswith(b"HTTP/1.1 503"):
                    break
                await asyncio.sleep(0.05)
        assert line.startswith(b"HTTP/1.1 200"), line
    finally:
        for _, w in idle:
            w.close()


def test_the_limit_leaves_a_reserve_of_descriptors_for_the_engine() -> None:
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    expected = max(64, soft - max(http_protocol.DESCRIPTOR_RESERVE, soft // 4))
    assert http_protocol.max_connections() == expected < soft
