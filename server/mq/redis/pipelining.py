"""Operations called in the same turn of the event loop go to Redis together, in one pipeline.

Under load a server acks, publishes and takes for many tasks at once, each a round trip of its
own: on a small machine the system calls and the wake-ups of every write cost more than the
scripts themselves. :class:`ScriptPipeline` queues each call and, once the loop has run what
was ready, sends all that were queued as one pipeline (one write, one read of the replies), so
a call alone pays one loop turn more and nothing else, and a burst pays one round trip.

A pipeline is not a transaction: each script stays atomic on its own and a refused one fails
only its caller. A connection that fails fails every call of its pipeline, and each caller
tries again on its own (:meth:`Link.call`), exactly as a call sent alone would. A caller that
gives up (its deadline, a cancel) leaves its script to run or not, as with a call sent alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from .library import Library

__all__ = ["MAX_BATCH", "ScriptPipeline"]

Call = tuple[str, Sequence[Any], "asyncio.Future[Any]"]
"""A queued call: the script's name, its arguments, the future of its reply."""

MAX_BATCH = 64
"""Calls per pipeline at most: a bigger burst goes as several pipelines, side by side."""


class ScriptPipeline:
    """Runs a library's operations by name, the calls of one loop turn in one pipeline."""

    def __init__(self, redis: Redis, library: Library) -> None:
        self._redis = redis
        self._library = library
        self._encoder = redis.get_encoder()  # type: ignore[no-untyped-call]
        self._queued: list[Call] = []
        self._sending: set[asyncio.Task[None]] = set()
        self.pipelines = 0
        """Pipelines of more than one call sent (for tests and benchmarks)."""

    async def call(self, name: str, args: Sequence[Any]) -> Any:
        """Run operation ``name`` with ``args``; return its reply, or raise what Redis raised."""
        if name not in self._library:
            raise KeyError(f"no script {name!r}")
        # Encoded now, not when the pipeline is packed: an argument Redis cannot be sent (a lone
        # surrogate, a wrong type) would fail every call of the pipeline.
        encode = self._encoder.encode
        args = [encode(arg) for arg in args]
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._queued:
            loop.call_soon(self._flush)
        self._queued.append((name, args, future))
        return await future

    async def aclose(self) -> None:
        """Wait for the pipelines under way (their callers learn how each ended)."""
        self._flush()
        if self._sending:
            await asyncio.wait(self._sending)

    def _flush(self) -> None:
        queued, self._queued = self._queued, []
        for start in range(0, len(queued), MAX_BATCH):
            batch = [call for call in queued[start : start + MAX_BATCH] if not call[2].done()]
            if not batch:
                continue
            task = asyncio.ensure_future(self._send(batch))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[Call]) -> None:
        try:
            if len(batch) > 1:
                self.pipelines += 1
            replies = await self._run(batch)
            for _ in range(2):  # Redis forgot the code (a restart, a flush): load it, send again
                unknown = [i for i, reply in enumerate(replies) if self._library.missing(reply)]
                if not unknown:
                    break
                names = {batch[i][0] for i in unknown}
                await self._library.recover(self._redis, names, [replies[i] for i in unknown])
                again = await self._run([batch[i] for i in unknown])
                for i, reply in zip(unknown, again, strict=True):
                    replies[i] = reply
        except Exception as exc:  # every caller learns it, and tries again on its own
            for _name, _args, future in batch:
                _fail(future, exc)
            return
        except BaseException:  # cancelled (the loop shuts down): so are its callers
            for _name, _args, future in batch:
                future.cancel()
            raise
        for (_name, _args, future), reply in zip(batch, replies, strict=True):
            if isinstance(reply, Exception):
                _fail(future, reply)
            else:
                _settle(future, reply)

    async def _run(self, batch: list[Call]) -> list[Any]:
        """Send ``batch``; each call's reply, or the error Redis answered it with."""
        if len(batch) == 1:
            name, args, _future = batch[0]
            try:
                command = self._library.command(name, args)
                return [await self._redis.execute_command(*command)]  # type: ignore[no-untyped-call]
            except ResponseError as exc:
                return [exc]
        pipe = self._redis.pipeline(transaction=False)
        for name, args, _future in batch:
            pipe.execute_command(*self._library.command(name, args))
        return await pipe.execute(raise_on_error=False)  # it gives its connection back itself


def _settle(future: asyncio.Future[Any], reply: Any) -> None:
    if not future.done():
        future.set_result(reply)


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
