"""Resumable streams: what to ask for, how to read each line, where to resume after a drop.

The sync and the async client each run the same cursor over their own connection.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncGenerator, AsyncIterable, Iterable, Iterator
from typing import Any, Generic, TypeVar

import httpx

from llamactl.client.errors import NotLlamactlServer
from llamactl.server.types import ChangeEvent, EventEnvelope

from ._base import SSEDecoder

T = TypeVar("T")

MAX_RECONNECTS = 5
"""Consecutive failed attempts to resume a stream before giving up (reset by every item received)."""
IDLE_SECONDS = 0.5
"""``follow=False``: stop once the server has sent nothing for this long (it sends its backlog at once)."""


def backoff(failures: int) -> float:
    return float(min(0.1 * 2 ** (failures - 1), 2.0))


_END_OF_LINE = re.compile(r"\r\n|\r|\n")


class LineSplitter:
    """Cuts a text stream into lines at CR LF, LF or CR only, as SSE (and NDJSON) end them.

    httpx's ``iter_lines()`` cuts at every ``str.splitlines()`` boundary, U+2028 and U+0085
    among them, which JSON leaves unescaped inside a string: an event holding one arrived cut
    in two, unreadable.
    """

    def __init__(self) -> None:
        self._partial: list[str] = []
        self._held_cr = False
        """The text so far ended with CR: the LF of a CR LF may come first in the next piece."""

    def feed(self, text: str) -> list[str]:
        """The lines ``text`` completes (without their ends of line)."""
        if self._held_cr:
            text, self._held_cr = "\r" + text, False
        if text.endswith("\r"):
            text, self._held_cr = text[:-1], True
        lines = _END_OF_LINE.split(text)
        if len(lines) == 1:
            self._partial.append(lines[0])
            return []
        lines[0] = "".join(self._partial) + lines[0]
        self._partial = [lines.pop()]
        return lines

    def flush(self) -> list[str]:
        """The last line, when the stream ended without an end of line."""
        last = "".join(self._partial)
        held, self._partial, self._held_cr = self._held_cr, [], False
        return [last] if last or held else []


def lines_of(pieces: Iterable[str]) -> Iterator[str]:
    splitter = LineSplitter()
    for text in pieces:
        yield from splitter.feed(text)
    yield from splitter.flush()


async def alines_of(pieces: AsyncIterable[str]) -> AsyncGenerator[str, None]:
    splitter = LineSplitter()
    async for text in pieces:
        for line in splitter.feed(text):
            yield line
    for line in splitter.flush():
        yield line


class Cursor(Generic[T]):
    """Position in a stream; ``request()`` asks for the rest, ``feed(line)`` turns a line into an item."""

    ends_on_close = True
    """A clean end of the answer means the stream is over (a task's log) rather than a drop to resume."""
    media_type = "text/event-stream"
    """What a llamactl server answers this stream with."""

    def __init__(self, path: str, from_seq: int) -> None:
        self.path = path
        self.next_seq = from_seq
        self.resumed = False
        self.done = False
        self._decoder = SSEDecoder()
        self._origin = ""

    def request(self) -> tuple[dict[str, Any], dict[str, str]]:
        """The query parameters and headers of the next attempt."""
        headers = {"Accept": "text/event-stream"}
        if self.resumed and self.next_seq > 0:
            headers["Last-Event-ID"] = str(self.next_seq - 1)
        self._decoder = SSEDecoder()
        return {"from_seq": self.next_seq}, headers

    def check(self, response: httpx.Response) -> None:
        """Raises NotLlamactlServer when ``response`` (a success) says it is something else than the
        stream asked for (an HTML page, JSON)."""
        kind = response.headers.get("content-type", "").partition(";")[0].strip()
        url = response.request.url
        self._origin = f"{url.scheme}://{url.netloc.decode('ascii')}"
        if kind and kind != self.media_type:
            answer = f"it answered GET {url.path} with {kind}, not {self.media_type}"
            raise NotLlamactlServer(self._origin, answer)

    def _unreadable(self) -> NotLlamactlServer:
        return NotLlamactlServer(self._origin, f"its stream {self.path} is not what a llamactl server sends")

    def feed(self, line: str) -> T | None:
        event = self._decoder.feed(line)
        if event is None:
            return None
        if event.event == "end":
            self.done = True
            return None
        try:
            item, seq = self.parse(event.data)
        except ValueError:  # pydantic's ValidationError too
            raise self._unreadable() from None
        if seq < 0:
            return item  # a notice outside the log (the change feed's `health`): nothing to resume
        if seq < self.next_seq:
            return None  # already seen before a reconnect
        self.next_seq = seq + 1
        return item

    def parse(self, data: str) -> tuple[T, int]:
        raise NotImplementedError


class TaskEvents(Cursor[EventEnvelope]):
    """A task's event log over SSE, resumed with ``Last-Event-ID``; ends with the task."""

    ends_on_close = False
    """The server ends the log with an ``end`` frame; it closes a stream without one when it
    stops (the task goes on, and finishes, meanwhile), so that is a drop to resume."""

    def parse(self, data: str) -> tuple[EventEnvelope, int]:
        envelope = EventEnvelope.model_validate_json(data)
        return envelope, envelope.seq


class RawTaskEvents(Cursor[dict[str, Any]]):
    """A task's events in Llama Deploy's NDJSON ``raw_event`` form; resumed by counting lines."""

    media_type = "application/x-ndjson"

    def request(self) -> tuple[dict[str, Any], dict[str, str]]:
        return {"from_seq": self.next_seq, "raw_event": "true"}, {"Accept": "application/x-ndjson"}

    def feed(self, line: str) -> dict[str, Any] | None:
        if not line.strip():
            return None
        try:
            item: dict[str, Any] = json.loads(line)
        except ValueError:
            raise self._unreadable() from None
        self.next_seq += 1
        return item


class Changes(Cursor[ChangeEvent]):
    """A deployment's change feed over SSE: endless, so a clean end is a drop to resume."""

    ends_on_close = False

    def parse(self, data: str) -> tuple[ChangeEvent, int]:
        change = ChangeEvent.model_validate_json(data)
        return change, change.seq
