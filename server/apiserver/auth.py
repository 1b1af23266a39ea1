"""Bearer-token authentication: every request but ``GET /healthz`` carries the token.

The token is read from the ``Authorization`` header only (never a query string or a cookie,
which end up in logs and browser history), the scheme is matched case-insensitively as HTTP
says (``bearer`` works), and the comparison takes the same time whatever the token supplied.
Neither the expected nor the supplied token is ever logged or echoed.
"""

from __future__ import annotations

import hashlib
import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from llamactl.server.apiserver.errors import error_response

__all__ = ["BearerTokenMiddleware", "token_matches"]

_EXEMPT = frozenset({"/healthz"})


def _digest(value: bytes) -> bytes:
    # Comparing digests keeps even the token's length out of the timing.
    return hashlib.sha256(value).digest()


def token_matches(authorization: bytes, expected_digest: bytes) -> bool:
    """Whether ``authorization`` (a header value) is ``Bearer <token>`` with the expected token."""
    scheme, _, credentials = authorization.strip().partition(b" ")
    supplied = credentials.strip()
    matches = hmac.compare_digest(_digest(supplied), expected_digest)
    return matches and scheme.lower() == b"bearer" and bool(supplied)


class BearerTokenMiddleware:
    """Answer 401 unless ``Authorization: Bearer <token>`` matches (compared in constant time)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._expected = _digest(token.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in _EXEMPT:
            await self.app(scope, receive, send)
            return
        supplied = b""
        for key, value in scope["headers"]:
            if key == b"authorization":
                supplied = value
                break
        if token_matches(supplied, self._expected):
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
