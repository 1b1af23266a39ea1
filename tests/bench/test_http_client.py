"""The raw load client against a real uvicorn app and a hand-written server (no timing assertions)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import pytest_asyncio
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from bench.http_client import HttpConnection, HttpError, _parse_head, build_request
from bench.load import LoadSpec, run_load
from bench.stats import percentile, summarize

HOST = "127.0.0.1"


class Counter:
    """Requests the app has answered."""

    def __init__(self) -> None:
        self.count = 0


def make_app(counter: Counter) -> Starlette:
    async def echo(request: Request) -> JSONResponse:
        counter.count += 1
        return JSONResponse(
            {"got": await request.json(), "client_port": request.client.port if request.client else 0}
        )

    async def lines(request: Request) -> StreamingResponse:
        async def parts() -> AsyncIterator[bytes]:
            for part in (b'{"n": 1}\n', b'{"n"', b': 2}\n{"n": 3}', b"\n", b"tail"):
                yield part
                await asyncio.sleep(0)

        return StreamingResponse(parts(), media_type="application/x-ndjson")

    async def empty(request: Request) -> Response:
        return Response(status_code=204)

    async def closing(request: Request) -> Response:
        return Response(b"bye", headers={"Connection": "close"})

    async def missing(request: Request) -> JSONResponse:
        return JSONResponse({"detail": "nope"}, status_code=404)

    return Starlette(
        routes=[
            Route("/echo", echo, methods=["POST"]),
            Route("/lines", lines),
            Route("/empty", empty),
            Route("/close", closing),
            Route("/missing", missing),
        ]
    )


@pytest_asyncio.fixture
async def app_server() -> AsyncIterator[tuple[int, Counter]]:
    counter = Counter()
    sock = socket.socket()
    sock.bind((HOST, 0))
    config = uvicorn.Config(
        make_app(counter), http="httptools", access_log=False, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        assert not task.done()
        await asyncio.sleep(0.01)
    yield sock.getsockname()[1], counter
    server.should_exit = True
    await task
    sock.close()


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def raw_server(handler: Handler) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, HOST, 0)
    return server, server.sockets[0].getsockname()[1]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


async def test_json_response_is_parsed(app_server: tuple[int, Counter]) -> None:
    port, _ = app_server
    async with HttpConnection(HOST, port) as conn:
        response = await conn.request("POST", "/echo", {"input": "{}", "service_id": "echo"})
    assert response.status == 200
    assert response.headers["content-type"] == "application/json"
    assert int(response.headers["content-length"]) == len(response.body)
    assert response.json()["got"] == {"input": "{}", "service_id": "echo"}


async def test_keep_alive_reuses_one_connection(app_server: tuple[int, Counter]) -> None:
    port, counter = app_server
    async with HttpConnection(HOST, port) as conn:
        ports = {(await conn.request("POST", "/echo", {"i": i})).json()["client_port"] for i in range(20)}
        assert conn.connects == 1
        assert conn.requests == 20
    assert len(ports) == 1
    assert counter.count == 20


async def test_error_status_and_empty_body(app_server: tuple[int, Counter]) -> None:
    port, _ = app_server
    async with HttpConnection(HOST, port) as conn:
        missing = await conn.request("GET", "/missing")
        empty = await conn.request("GET", "/empty")
        after = await conn.request("POST", "/echo", {"x": 1})
        assert conn.connects == 1
    assert (missing.status, missing.json()) == (404, {"detail": "nope"})
    assert (empty.status, empty.body) == (204, b"")
    assert after.status == 200


async def test_connection_close_reconnects(app_server: tuple[int, Counter]) -> None:
    port, _ = app_server
    async with HttpConnection(HOST, port) as conn:
        bye = await conn.request("GET", "/close")
        again = await conn.request("POST", "/echo", {"x": 1})
        assert conn.connects == 2
    assert (bye.status, bye.body) == (200, b"bye")
    assert again.status == 200


async def test_chunked_body_is_joined(app_server: tuple[int, Counter]) -> None:
    port, _ = app_server
    async with HttpConnection(HOST, port) as conn:
        response = await conn.request("GET", "/lines")
        after = await conn.request("POST", "/echo", {"x": 1})
        assert conn.connects == 1
    assert response.headers["transfer-encoding"] == "chunked"
    assert response.body == b'{"n": 1}\n{"n": 2}\n{"n": 3}\ntail'
    assert after.status == 200


async def test_stream_lines_splits_across_chunks(app_server: tuple[int, Counter]) -> None:
    port, _ = app_server
    async with HttpConnection(HOST, port) as conn:
        got = [line async for _, line in conn.stream_lines("GET", "/lines")]
        # The connection is reusable once the stream was read to its end.
        assert (await conn.request("POST", "/echo", {"x": 1})).status == 200
        assert conn.connects == 1
    assert got == [b'{"n": 1}', b'{"n": 2}', b'{"n": 3}', b"tail"]


async def test_leaving_a_stream_early_drops_the_connection(app_server: tuple[int, Counter]) -> None:
    port, _ = app_server
    async with HttpConnection(HOST, port) as conn:
        stream = conn.stream_lines("GET", "/lines")
        assert await anext(stream) == (200, b'{"n": 1}')
        await stream.aclose()
        assert (await conn.request("POST", "/echo", {"x": 1})).status == 200
        assert conn.connects == 2


async def test_chunk_extensions_trailers_and_eof_bodies() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\nx-a: 2\r\n\r\n"
            b"5;ext=1\r\nhello\r\n1\r\n!\r\n0\r\nX-Trailer: y\r\n\r\n"
        )
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil eof")
        await writer.drain()
        writer.close()

    server, port = await raw_server(handler)
    async with server, HttpConnection(HOST, port) as conn:
        chunked = await conn.request("GET", "/")
        eof = await conn.request("GET", "/")
        assert conn.connects == 1
    assert (chunked.body, chunked.headers["x-a"]) == (b"hello!", "1, 2")
    assert (eof.status, eof.body) == (200, b"until eof")


async def test_closed_before_response_raises() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.close()

    server, port = await raw_server(handler)
    async with server, HttpConnection(HOST, port) as conn:
        with pytest.raises(HttpError, match="closed before a response"):
            await conn.request("GET", "/")


def test_head_parsing() -> None:
    assert _parse_head(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nX-Y:  z ") == (
        201,
        {"content-length": "2", "x-y": "z"},
    )
    with pytest.raises(HttpError):
        _parse_head(b"SPDY/3 200 OK")
    with pytest.raises(HttpError):
        _parse_head(b"HTTP/1.1 abc OK")


def test_build_request() -> None:
    raw = build_request("POST", HOST, 80, "/p", {"a": 1}, headers={"X-T": "1"})
    assert raw == (
        b"POST /p HTTP/1.1\r\nHost: 127.0.0.1:80\r\nX-T: 1\r\nContent-Type: application/json\r\n"
        b'Content-Length: 7\r\n\r\n{"a":1}'
    )
    assert build_request("GET", HOST, 80, "/") == b"GET / HTTP/1.1\r\nHost: 127.0.0.1:80\r\n\r\n"


async def test_concurrent_load_counts_every_request(app_server: tuple[int, Counter]) -> None:
    port, counter = app_server
    raw = build_request("POST", HOST, port, "/echo", {"x": 1})
    result = await run_load(LoadSpec(HOST, port, raw, connections=4, duration=0.3))
    assert result.errors == 0
    assert len(result.per_connection) == 4
    assert all(n > 0 for n in result.per_connection)
    assert len(result.latencies) == sum(result.per_connection)
    # Each connection finishes one request after the window closes, which is not recorded.
    assert counter.count == len(result.latencies) + 4
    assert result.rate > 0
    assert result.summary().count == len(result.latencies)


async def test_load_warmup_is_not_recorded_and_wrong_bodies_are_errors(
    app_server: tuple[int, Counter],
) -> None:
    port, counter = app_server
    raw = build_request("POST", HOST, port, "/echo", {"x": 1})
    result = await run_load(
        LoadSpec(HOST, port, raw, expect_body=b"other", connections=2, duration=0.2, warmup=0.1)
    )
    assert result.latencies == []
    assert result.errors > 0
    assert result.first_error is not None
    assert result.first_error.startswith("200 ")
    assert counter.count > result.errors


def test_percentiles() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 99) == 4.0
    summary = summarize([3.0, 1.0, 2.0])
    assert (summary.count, summary.p50, summary.mean) == (3, 2.0, 2.0)
    assert summarize([]).count == 0
