"""A loopback TCP proxy that can be cut and restored: a broker outage for a backend whose broker
the tests may not stop (the Redis server is shared, so the tests cut the line to it instead)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading


class TcpProxy:
    """Forwards ``127.0.0.1:<port>`` to ``target``. :meth:`stop` closes every connection and refuses
    new ones (as a stopped server does); :meth:`start` listens again on the same port."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._listener: socket.socket | None = None
        self._fresh: set[socket.socket] = set()
        """Accepted connections that no transport owns yet."""
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        if self._listener is not None:
            return
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        listener.setblocking(False)
        self.port = listener.getsockname()[1]
        self._listener = listener
        asyncio.get_running_loop().add_reader(listener, self._accept, listener)

    async def stop(self) -> None:
        # Our own accepts, not asyncio's server: closing that one between an accept and the making
        # of its transport leaves the accepted socket open for the garbage collector. Here every
        # accepted socket is known from the moment it is accepted.
        if self._listener is not None:
            asyncio.get_running_loop().remove_reader(self._listener)
            self._listener.close()
            self._listener = None
        for conn in list(self._fresh):
            conn.close()
        self._fresh.clear()
        for w in list(self._writers):
            w.transport.abort()
        waiting = [*self._tasks, *self._handlers]
        for t in waiting:
            t.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        self._writers.clear()

    def _accept(self, listener: socket.socket) -> None:
        try:
            conn, _ = listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        conn.setblocking(False)
        self._fresh.add(conn)
        handler = asyncio.get_running_loop().create_task(self._open(conn))
        self._handlers.add(handler)
        handler.add_done_callback(self._handlers.discard)

    async def _open(self, conn: socket.socket) -> None:
        try:
            reader, writer = await asyncio.open_connection(sock=conn)
        except BaseException:
            conn.close()
            raise
        finally:
            self._fresh.discard(conn)
        self._writers.add(writer)
        await self._serve(reader, writer)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            with contextlib.suppress(asyncio.CancelledError):
                await self._forward(reader, writer)
        finally:
            self._writers.discard(writer)
            writer.transport.abort()

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            return
        if self._listener is None or writer.transport.is_closing():
            up_writer.transport.abort()  # stopped while this connection was being opened
            return
        self._writers |= {writer, up_writer}
        pipes = [
            asyncio.create_task(self._pipe(reader, up_writer)),
            asyncio.create_task(self._pipe(up_reader, writer)),
        ]
        self._tasks.update(pipes)
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for p in pipes:
                p.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            self._tasks.difference_update(pipes)
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.transport.abort()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()


class ProxyThread:
    """A :class:`TcpProxy` served by a thread of its own, for tests whose own loop blocks (a
    synchronous test, or one waiting for a subprocess): ``with ProxyThread(host, port) as p``."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.proxy = TcpProxy(target_host, target_port)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy", daemon=True)

    @property
    def port(self) -> int:
        return self.proxy.port

    def start(self) -> None:
        """Listen (again, on the same port)."""
        asyncio.run_coroutine_threadsafe(self.proxy.start(), self._loop).result(10)

    def stop(self) -> None:
        """Cut every connection and refuse new ones."""
        asyncio.run_coroutine_threadsafe(self.proxy.stop(), self._loop).result(10)

    def __enter__(self) -> ProxyThread:
        self._thread.start()
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
