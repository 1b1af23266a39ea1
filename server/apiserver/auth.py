"""Bearer-token authentication: every request but ``GET /healthz`` carries the token."""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from llamactl.server.apiserver.errors import error_response

__all__ = ["BearerTokenMiddleware"]

_EXEMPT = frozenset({"/healthz"})


class BearerTokenMiddleware:
    """Answer 401 unless ``Authorization: Bearer <token>`` matches (compared in constant time)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in _EXEMPT:
            await self.app(scope, receive, send)
            return
        supplied = b""
        for key, value in scope["headers"]:
            if key == b"authorization":
                supplied = value
                break
        if hmac.compare_digest(supplied, self._expected):
            await self.app(scope, receive, send)
            return
        detail = (
            "a bearer token is required: send `Authorization: Bearer <token>` (llamactl reads it "
            "from --token or LLAMACTL_API_TOKEN)"
            if not supplied
            else "the bearer token is wrong: use the token the server was started with"
        )
        response = error_response(401, detail)
        response.headers["WWW-Authenticate"] = "Bearer"
        await response(scope, receive, send)
