"""Pick a state store backend from ``state_store_uri``."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

from llamactl.server.errors import StateStoreError
from llamactl.server.state.base import StateStore
from llamactl.server.state.memory import MemoryStateStore
from llamactl.server.state.sqlite import SQLiteStateStore

__all__ = ["VALID_SCHEMES", "open_state_store"]

VALID_SCHEMES = ("sqlite:///<path>", "memory://")
_PLANNED = {"redis": "Redis", "rediss": "Redis", "postgresql": "PostgreSQL", "postgres": "PostgreSQL"}
_SQLITE_OPTIONS = ("synchronous", "busy_timeout", "writer")


def open_state_store(uri: str) -> StateStore:
    """The (not yet started) store ``uri`` names; ``await store.start()`` or ``async with`` it.

    * ``memory://``: in process memory, gone at close.
    * ``sqlite:///relative/path.db`` (relative to the current folder),
      ``sqlite:////absolute/path.db``, ``sqlite:///:memory:``. Options as a query string:
      ``?synchronous=FULL`` (fsync every commit), ``?busy_timeout=<seconds>`` and
      ``?writer=thread|inline`` (where transactions run: a writer thread, or the event loop itself).

    Raises ``StateStoreError`` for a backend that does not exist (yet) or a malformed URI.
    """
    scheme, sep, rest = uri.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise StateStoreError(f"state store URI {uri!r} has no scheme: use one of {', '.join(VALID_SCHEMES)}")
    if scheme == "memory":
        if rest.strip("/"):
            raise StateStoreError(f"state store URI {uri!r}: memory:// takes no path")
        return MemoryStateStore()
    if scheme == "sqlite":
        return _open_sqlite(uri)
    if scheme in _PLANNED:
        raise StateStoreError(
            f"state store URI {uri!r}: the {_PLANNED[scheme]} backend is not available yet: "
            "use sqlite:///<path> (persistent, the default) or memory://"
        )
    raise StateStoreError(
        f"state store URI {uri!r}: unknown scheme {scheme!r}: valid schemes are {', '.join(VALID_SCHEMES)}"
    )


def _open_sqlite(uri: str) -> StateStore:
    parts = urlsplit(uri)
    if parts.netloc or not parts.path.startswith("/") or len(parts.path) < 2:
        raise StateStoreError(
            f"state store URI {uri!r}: write sqlite:///relative/path.db, sqlite:////absolute/path.db "
            "or sqlite:///:memory: (three slashes, then the path)"
        )
    path = parts.path[1:]
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(options) - set(_SQLITE_OPTIONS))
    if unknown:
        raise StateStoreError(
            f"state store URI {uri!r}: unknown option(s) {', '.join(unknown)}: "
            f"valid options are {', '.join(_SQLITE_OPTIONS)}"
        )
    synchronous = options.get("synchronous", "NORMAL").upper()
    if synchronous not in ("NORMAL", "FULL"):
        raise StateStoreError(f"state store URI {uri!r}: synchronous must be NORMAL or FULL")
    try:
        busy_timeout = float(options.get("busy_timeout", "5"))
    except ValueError:
        raise StateStoreError(f"state store URI {uri!r}: busy_timeout must be a number of seconds") from None

    return SQLiteStateStore(
        path,
        synchronous="FULL" if synchronous == "FULL" else "NORMAL",
        busy_timeout=busy_timeout,
        writer=_writer(uri, options.get("writer", "inline")),
    )


def _writer(uri: str, value: str) -> str:
    if value not in ("thread", "inline"):
        raise StateStoreError(f"state store URI {uri!r}: writer must be thread or inline, not {value!r}")
    return value
