"""What the sync and the async client share: settings, request descriptions, answers and SSE parsing."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx

from llamactl.client.errors import (
    ClientError,
    InvalidServerUrl,
    NotLlamactlServer,
    ServerStopping,
    ServerUnreachable,
    error_for_status,
)

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
    "parse_answer",
    "server_url",
    "transport_error",
    "unreachable",
]

SERVER_ENV = "LLAMACTL_SERVER"
TOKEN_ENV = "LLAMACTL_API_TOKEN"
DEFAULT_SERVER = "http://127.0.0.1:4501"
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
"""Per request. Calls that wait on the server (run, result, deploy, delete) and streams: no read timeout."""

T = TypeVar("T")


def server_url(url: str) -> str:
    """``url`` as the client uses it: ``http://`` added when it has no scheme (``127.0.0.1:4501``,
    ``localhost:4501``), no trailing slash.

    Raises:
        InvalidServerUrl: it is not an http(s) URL with a host (e.g. ``ftp://x``, ``http://:80``,
            a port that is not a number).
    """
    text = url.strip()
    if "://" not in text:
        text = f"http://{text}"
    example = "use http://HOST:PORT, e.g. http://127.0.0.1:4501"
    try:
        parsed = httpx.URL(text)
    except (httpx.InvalidURL, ValueError) as exc:
        raise InvalidServerUrl(f"'{url}' is not a server URL ({exc}): {example}") from None
    if parsed.scheme not in ("http", "https"):
        raise InvalidServerUrl(f"'{url}' is not an http or https URL: {example}")
    if not parsed.host:
        raise InvalidServerUrl(f"'{url}' names no host: {example}")
    return text.rstrip("/")


def client_settings(
    base_url: str | None, token: str | None, timeout: float | httpx.Timeout | None, headers: Mapping[str, str]
) -> dict[str, Any]:
    """The keyword arguments of the httpx client both clients build."""
    url = server_url(base_url or os.environ.get(SERVER_ENV) or DEFAULT_SERVER)
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


def _base(response: httpx.Response) -> str:
    url = response.request.url
    return f"{url.scheme}://{url.netloc.decode('ascii')}"


def _looks_like(response: httpx.Response) -> str:
    """How an answer that no llamactl server would give looks, for an error message."""
    kind = response.headers.get("content-type", "").partition(";")[0].strip() or "no content type"
    what = "an HTML page" if kind == "text/html" else f"a {kind} body"
    request = response.request
    return f"it answered {request.method} {request.url.path} with {response.status_code} and {what}"


def check(response: httpx.Response) -> Any:
    """The JSON of a successful answer; the matching ApiError otherwise.

    Raises NotLlamactlServer for an answer that is not JSON (a llamactl server answers every
    request, errors too, with JSON; an error always with a ``detail``).
    """
    if response.is_success:
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise NotLlamactlServer(_base(response), _looks_like(response)) from None
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or "detail" not in body:
        raise NotLlamactlServer(_base(response), _looks_like(response))
    error = error_for_status(response.status_code, body, response.text, response.headers)
    error.url = _base(response)
    raise error


def parse_answer(call: Call[T], response: httpx.Response) -> T:
    """``call``'s parse of a checked answer; NotLlamactlServer when it is not of the expected shape."""
    value = check(response)
    try:
        return call.parse(value)
    except ValueError:  # pydantic's ValidationError too
        raise NotLlamactlServer(
            _base(response),
            f"its answer to {call.method} {call.path} is not what a llamactl server sends",
        ) from None


_ERRNO = re.compile(r"^\[Errno -?\d+\]\s*")


def _reason(exc: Exception) -> str:
    text = _ERRNO.sub("", str(exc).strip()) or type(exc).__name__
    return text[:1].lower() + text[1:]


def unreachable(client: httpx.Client | httpx.AsyncClient, exc: Exception) -> ServerUnreachable:
    return ServerUnreachable(str(client.base_url).rstrip("/"), _reason(exc))


PROBE_PATH = "/healthz"
"""What the client asks when a request broke off, to tell a server that went away from something
that is not a llamactl server at all."""
PROBE_TIMEOUT = httpx.Timeout(5.0)


def transport_error(
    client: httpx.Client | httpx.AsyncClient,
    exc: httpx.TransportError,
    probe: httpx.Response | Exception | None = None,
    *,
    known: bool = False,
) -> ClientError:
    """The client error for an httpx transport error of a request.

    ``probe`` is what ``GET /healthz`` got right after a request broke off without an answer (a
    llamactl server answers it with JSON), so the error can say which of the two it was.
    ``known``: a llamactl server has answered this client before, so a request that breaks off
    without a word, and a probe that gets none either, mean that the server went away (killed,
    or restarting), not that something else listens there.
    """
    url = str(client.base_url).rstrip("/")
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return unreachable(client, exc)
    if isinstance(exc, httpx.TimeoutException):
        return ServerUnreachable(url, "it accepted the connection but did not answer in time", sent=True)
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return InvalidServerUrl(f"'{url}' is not a server URL: use http://HOST:PORT")
    if isinstance(probe, httpx.ConnectError | httpx.ConnectTimeout):
        return ServerUnreachable(url, f"it went away: {_reason(exc)}", sent=True)
    if isinstance(probe, httpx.Response):
        dropped = ServerUnreachable(
            url, f"the connection dropped before the answer ({_reason(exc)})", sent=True
        )
        try:
            check(probe)
        except ServerStopping as stopping:
            return stopping
        except NotLlamactlServer:
            pass
        except ClientError:
            return dropped  # a llamactl server answers there (it refused the probe itself)
        else:
            return dropped
    if known:
        return ServerUnreachable(url, f"it went away: {_reason(exc)}", sent=True)
    # It closes the connection without an HTTP answer, or answers bytes that are not HTTP: a
    # database's port, say.
    return NotLlamactlServer(url, f"it does not answer HTTP ({_reason(exc)})")


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
