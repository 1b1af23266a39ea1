"""Passwords a server URL may carry in its query (``?password=...``: redis-py and asyncpg both
take one there; ``ssl_password`` / ``sslpassword`` unlock a TLS key), hidden wherever the URL is
shown, as ``user:password@`` is."""

from __future__ import annotations

import re
from urllib.parse import unquote

__all__ = ["hide_query_password", "query_passwords"]

_QUERY_PASSWORD = re.compile(r"([?&](?:ssl_?)?password=)([^&#]*)", re.IGNORECASE)


def hide_query_password(url: str) -> str:
    """``url`` with the value of each ``password=`` (or ``ssl_password=``, ``sslpassword=``) in its
    query replaced by ``***``."""
    return _QUERY_PASSWORD.sub(r"\1***", url)


def query_passwords(url: str) -> list[str]:
    """The passwords in ``url``'s query, as written and decoded (to hide them in error texts)."""
    raw = [m.group(2) for m in _QUERY_PASSWORD.finditer(url) if m.group(2)]
    return [*raw, *(unquote(value) for value in raw)]
