"""A raw asyncio HTTP/1.1 keep-alive client, cheap enough to load a server from one process.

httpx costs ~1.5 ms of client CPU per request on this machine, more than the servers being
measured; this client writes pre-built request bytes and parses only the status line, the
headers it needs (``Content-Length``, ``Transfer-Encoding``, ``Connection``) and the body.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["HttpConnection", "HttpError", "Response", "build_request"]

_HEADER_END = b"\r\n\r\n"
_MAX_HEADER = 64 * 1024


class HttpError(Exception):
    """The server sent something this client cannot parse, or closed the connection early."""


@dataclass(slots=True)
class Response:
    """One complete response; header names are lower-cased."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body decoded as JSON."""
        return json.loads(self.body)


def build_request(
    method: str,
    host: str,
    port: int,
    path: str,
    body: bytes | str | Mapping[str, Any] | None = None,
    *,
    headers: Mapping[str, str] | None = None,
) -> bytes:
    """The bytes of one HTTP/1.1 keep-alive request; a mapping body is sent as JSON."""
    payload: bytes
    extra = dict(headers or {})
    if body is None:
        payload = b""
    elif isinstance(body, bytes):
        payload = body
    elif isinstance(body, str):
        payload = body.encode()
    else:
        payload = json.dumps(body, separators=(",", ":")).encode()
        extra.setdefault("Content-Type", "application/json")
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}"]
    lines += [f"{name}: {value}" for name, value in extra.items()]
    if payload or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(payload)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    """Status code and lower-cased headers of a response head (without the blank line)."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise HttpError(f"bad status line {lines[0]!r}")
    try:
        status = int(parts[1])
    except ValueError:
        raise HttpError(f"bad status line {lines[0]!r}") from None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            raise HttpError(f"bad header line {line!r}")
        key = name.strip().lower().decode("latin-1")
        text = value.strip().decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return status, headers


@dataclass(slots=True)
class HttpConnection:
    """One keep-alive connection; requests on it are sequential (HTTP/1.1 without pipelining).

    The connection opens on the first request and reopens after the server closes it
    (``Connection: close`` or EOF between requests); ``connects`` counts the TCP connects.
    """

    host: str
    port: int
    timeout: float | None = 30.0
    connects: int = 0
    requests: int = 0
    _reader: asyncio.StreamReader | None = field(default=None, repr=False)
    _writer: asyncio.StreamWriter | None = field(default=None, repr=False)

    async def __aenter__(self) -> HttpConnection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        """Open the TCP connection if it is not open."""
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(
                self.host, self.port, limit=_MAX_HEADER
            )
            self.connects += 1

    async def close(self) -> None:
        """Close the TCP connection (idempotent)."""
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    def build(
        self,
        method: str,
        path: str,
        body: bytes | str | Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> bytes:
        """Request bytes for this connection's host (see :func:`build_request`)."""
        return build_request(method, self.host, self.port, path, body, headers=headers)

    async def request(
        self,
        method: str,
        path: str,
        body: bytes | str | Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        """Send one request and read its whole response."""
        return await self.send(self.build(method, path, body, headers))

    async def send(self, raw: bytes) -> Response:
        """Send pre-built request bytes and read the whole response (the load generator's path)."""
        reader = await self._start(raw)
        status, headers = await self._head(reader)
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = b"".join([chunk async for chunk in self._chunks(reader)])
        elif "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        elif status in (204, 304) or 100 <= status < 200:
            body = b""
        else:
            body = await reader.read()
            await self.close()
        self._finish(headers)
        return Response(status, headers, body)

    async def stream_lines(
        self,
        method: str,
        path: str,
        body: bytes | str | Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> AsyncGenerator[tuple[int, bytes], None]:
        """Send a request and yield ``(status, line)`` for each line of the body as it arrives.

        For NDJSON streams; the line excludes its ``\\n``. A body that ends without a newline
        yields its last part as a line too.
        """
        reader = await self._start(self.build(method, path, body, headers))
        status, head = await self._head(reader)
        chunked = head.get("transfer-encoding", "").lower() == "chunked"
        parts = self._chunks(reader) if chunked else self._plain(reader, head)
        pending = b""
        done = False
        try:
            async for part in parts:
                pending += part
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    yield status, line
            if pending:
                yield status, pending
            done = True
        finally:
            if not done:
                # The caller stopped mid-body: the connection cannot carry another request.
                self._drop()
        self._finish(head)

    async def _start(self, raw: bytes) -> asyncio.StreamReader:
        """Write ``raw``, reconnecting once if the idle connection turned out to be closed."""
        for attempt in (1, 2):
            await self.connect()
            assert self._reader is not None and self._writer is not None
            if self._reader.at_eof():
                await self.close()
                continue
            try:
                self._writer.write(raw)
            except (ConnectionError, RuntimeError):
                if attempt == 2:
                    raise
                await self.close()
                continue
            self.requests += 1
            return self._reader
        raise HttpError("could not send the request")

    async def _head(self, reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
        try:
            head = await reader.readuntil(_HEADER_END)
        except asyncio.IncompleteReadError as exc:
            await self.close()
            raise HttpError(f"connection closed before a response ({len(exc.partial)} bytes read)") from None
        return _parse_head(head[: -len(_HEADER_END)])

    async def _chunks(self, reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
        """The data of each chunk of a chunked body, then consume the trailers."""
        while True:
            size_line = await reader.readuntil(b"\r\n")
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise HttpError(f"bad chunk size line {size_line!r}") from None
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                return
            data = await reader.readexactly(size + 2)
            if data[-2:] != b"\r\n":
                raise HttpError("chunk not terminated by CRLF")
            yield data[:-2]

    async def _plain(self, reader: asyncio.StreamReader, head: dict[str, str]) -> AsyncIterator[bytes]:
        """A Content-Length body, or a body delimited by EOF, as it arrives."""
        if "content-length" in head:
            left = int(head["content-length"])
            while left > 0:
                data = await reader.read(min(left, 65536))
                if not data:
                    raise HttpError("connection closed inside the body")
                left -= len(data)
                yield data
            return
        while data := await reader.read(65536):
            yield data
        await self.close()

    def _finish(self, headers: dict[str, str]) -> None:
        if headers.get("connection", "").lower() == "close":
            self._drop()

    def _drop(self) -> None:
        """Close the connection without waiting (the next request reconnects)."""
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None
