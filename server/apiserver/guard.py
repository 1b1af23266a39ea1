"""The first thing every request meets: Host and Origin checks and the body size limit.

A server on ``127.0.0.1`` is reachable by every web page the user opens. A page cannot read our
answers (no CORS headers), but it can *send*: a form or ``text/plain`` POST needs no preflight,
and DNS rebinding makes ``evil.example`` resolve to 127.0.0.1 so the page becomes same-origin
with us. So, before any route runs:

* a ``Host`` that is not loopback or allowed is refused (400, as Starlette's TrustedHostMiddleware
  does): a rebound name never reaches a route;
* a request with an ``Origin`` that is neither allowed nor the server's own is refused (403):
  browsers always send ``Origin`` on cross-origin POSTs, so forms and ``text/plain`` posts from
  other pages never reach a route (JSON routes also refuse any body that is not
  ``application/json``, see :mod:`~llamactl.server.apiserver.validation`);
* a body over the limit is refused (413): at once when ``Content-Length`` says so, else as soon as
  the bytes read pass it, so a huge body is never buffered.

Clients that are not browsers (httpx, curl, our client, Llama Deploy's) send no ``Origin`` and
a loopback ``Host``: they are served as before.
"""

from __future__ import annotations

from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llamactl.server.apiserver.auth import BearerTokenMiddleware
from llamactl.server.apiserver.errors import BodyTooLarge, CatchAllMiddleware, error_response
from llamactl.server.apiserver.policy import AccessPolicy

__all__ = ["RequestGuard", "middleware_for"]

_CACHE_LIMIT = 64


def _shown(value: str) -> str:
    return repr(value) if len(value) <= 80 and value.isprintable() else f"of {len(value)} characters"


def middleware_for(policy: AccessPolicy) -> list[Middleware]:
    """The middleware both apps (API and control-plane port) run, outermost first.

    CORS headers (for the ``--allow-origin`` pages) come before the token check, since a browser's
    preflight carries no token.
    """
    middleware = [Middleware(CatchAllMiddleware), Middleware(RequestGuard, policy=policy)]
    if policy.allowed_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(policy.allowed_origins),
                allow_methods=["GET", "POST", "DELETE"],
                allow_headers=["Authorization", "Content-Type", "Accept", "Last-Event-ID"],
                expose_headers=["Retry-After"],
                max_age=600,
            )
        )
    if policy.token:
        middleware.append(Middleware(BearerTokenMiddleware, token=policy.token))
    return middleware


class RequestGuard:
    """ASGI middleware applying an :class:`AccessPolicy`'s Host, Origin and body size rules."""

    def __init__(self, app: ASGIApp, policy: AccessPolicy) -> None:
        self.app = app
        self.policy = policy
        self._served_hosts: set[bytes] = set()

    def _host_ok(self, host: bytes) -> bool:
        if host in self._served_hosts:
            return True
        if not self.policy.host_allowed(host.decode("latin-1")):
            return False
        if len(self._served_hosts) < _CACHE_LIMIT:
            self._served_hosts.add(host)
        return True

    def _refusal(self, scope: Scope, host: bytes | None, origin: bytes | None) -> tuple[int, str] | None:
        if host is None:
            return 400, "the request has no Host header: send one (every HTTP/1.1 client does)"
        if not self._host_ok(host):
            return 400, (
                f"Invalid host header {_shown(host.decode('latin-1'))}: this server answers only to "
                "loopback names (localhost, 127.0.0.1, ::1) and the names it was started with; start it "
                "with --allowed-host NAME to serve another"
            )
        if origin is not None:
            text = origin.decode("latin-1")
            if not self.policy.origin_allowed(text, scope.get("scheme", "http"), host.decode("latin-1")):
                return 403, (
                    f"requests from web pages of origin {_shown(text)} are refused: a page may drive this "
                    "server only if it was started with --allow-origin for that origin"
                )
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host = origin = length = None
        for key, value in scope["headers"]:
            if key == b"host":
                host = host or value
            elif key == b"origin":
                origin = origin or value
            elif key == b"content-length":
                length = value
        refusal = self._refusal(scope, host, origin)
        if refusal is not None:
            if kind == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            await error_response(*refusal)(scope, receive, send)
            return
        if kind == "websocket":
            await self.app(scope, receive, send)
            return
        limit = self.policy.max_body_size
        if length is not None and length.isdigit() and int(length) > limit:
            await error_response(413, str(BodyTooLarge(limit)))(scope, receive, send)
            return
        await self.app(scope, _BodyLimit(receive, limit), send)


class _BodyLimit:
    """Counts the body as it is read: past ``limit`` bytes ``receive`` raises BodyTooLarge, a 413
    through the app's error handlers. uvicorn drops the rest of the body unread once the answer is
    out, so nothing past the limit is kept, and the client still gets to read the 413."""

    __slots__ = ("_limit", "_read", "_receive")

    def __init__(self, receive: Receive, limit: int) -> None:
        self._receive = receive
        self._limit = limit
        self._read = 0

    async def __call__(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request":
            self._read += len(message.get("body", b""))
            if self._read > self._limit:
                raise BodyTooLarge(self._limit)
        return message
