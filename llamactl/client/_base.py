"""What the sync and the async client share: settings, request descriptions, answers and SSE parsing."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx

from llamactl.client.errors import ServerUnreachable, error_for_status

__all__ = [
    "DEFAULT_SERVER",
    "DEFAULT_TIMEOUT",
    "SERVER_ENV",
    "TOKEN_ENV",
    "Call",
    "SSEDecoder",
    "ServerSentEvent",
    "check",
    "client_settings",
    "unreachable",
]

SERVER_ENV = "LLAMACTL_SERVER"
TOKEN_ENV = "LLAMACTL_API_TOKEN"
DEFAULT_SERVER = "http://127.0.0.1:4501"
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
"""Per request. Calls that wait on the server (run, result, deploy, delete) and streams: no read timeout."""

T = TypeVar("T")


def client_settings(
    base_url: str | None, token: str | None, timeout: float | httpx.Timeout | None, headers: Mapping[str, str]
) -> dict[str, Any]:
    """The keyword arguments of the httpx client both clients build."""
    url = (base_url or os.environ.get(SERVER_ENV) or DEFAULT_SERVER).rstrip("/")
    token = token if token is not None else os.environ.get(TOKEN_ENV) or None
    all_headers = {"Accept": "application/json", **headers}
    if token:
        all_headers["Authorization"] = f"Bearer {token}"
    if timeout is None or isinstance(timeout, int | float):
        timeout = httpx.Timeout(timeout, connect=DEFAULT_TIMEOUT.connect if timeout is not None else None)
    return {"base_url": url, "headers": all_headers, "timeout": timeout}


def _parse_nothing(_: Any) -> None:
    return None


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request and how to read its answer."""

    method: str
    path: str
    parse: Callable[[Any], T]
    params: dict[str, Any] = field(default_factory=dict)
    json: Any = None
    files: dict[str, tuple[str, bytes, str]] | None = None
    waits: bool = False
    """The server holds the answer until something happens: no read timeout."""

    def request_kwargs(self, timeout: httpx.Timeout) -> dict[str, Any]:
        params = {k: _param(v) for k, v in self.params.items() if v is not None}
        kwargs: dict[str, Any] = {"params": params}
        if self.json is not None:
            kwargs["json"] = self.json
        if self.files is not None:
            kwargs["files"] = self.files
        if self.waits:
            kwargs["timeout"] = httpx.Timeout(
                connect=timeout.connect, read=None, write=timeout.write, pool=timeout.pool
            )
        return kwargs


def _param(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def check(response: httpx.Response) -> Any:
    """The JSON of a successful answer; the matching ApiError otherwise."""
    if response.is_success:
        if not response.content:
            return None
        return response.json()
    try:
        body = response.json()
    except ValueError:
        body = None
    raise error_for_status(response.status_code, body, response.text)


def unreachable(client: httpx.Client | httpx.AsyncClient, exc: Exception) -> ServerUnreachable:
    return ServerUnreachable(str(client.base_url).rstrip("/"), str(exc))


@dataclass
class ServerSentEvent:
    """One message of a ``text/event-stream``."""

    event: str = "message"
    data: str = ""
    id: str | None = None

    def json(self) -> Any:
        return json.loads(self.data)


class SSEDecoder:
    """Turns the lines of a ``text/event-stream`` into events.

    As the SSE spec says, a block without ``data`` (a ``retry:`` hint, a ``: keepalive`` comment) is
    no event.
    """

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None
        self._has_data = False

    def feed(self, line: str) -> ServerSentEvent | None:
        """Takes one line (without its end of line); returns an event when ``line`` completes one."""
        line = line.rstrip("\r\n")
        if not line:
            event = ServerSentEvent(self._event or "message", "\n".join(self._data), self._id)
            has_data, self._event, self._data, self._id, self._has_data = self._has_data, "", [], None, False
            return event if has_data else None
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
            self._has_data = True
        elif name == "event":
            self._event = value
        elif name == "id":
            self._id = value
        return None
