"""Pick a state store backend from ``state_store_uri``."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from llamactl.server.errors import StateStoreError
from llamactl.server.state.base import StateStore
from llamactl.server.state.memory import MemoryStateStore
from llamactl.server.state.sqlite import SQLiteStateStore
from llamactl.server.url_secrets import hide_query_password

__all__ = ["VALID_SCHEMES", "open_state_store", "redacted"]

VALID_SCHEMES = ("sqlite:///<path>", "memory://", "postgresql://<user>@<host>:<port>/<database>")
_PLANNED = {"redis": "Redis", "rediss": "Redis"}
_SQLITE_OPTIONS = ("synchronous", "busy_timeout", "writer")
_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def open_state_store(uri: str) -> StateStore:
    """The (not yet started) store ``uri`` names; ``await store.start()`` or ``async with`` it.

    * ``memory://``: in process memory, gone at close.
    * ``sqlite:///relative/path.db`` (relative to the current folder),
      ``sqlite:////absolute/path.db``, ``sqlite:///:memory:``. Options as a query string:
      ``?synchronous=FULL`` (fsync every commit), ``?busy_timeout=<seconds>`` and
      ``?writer=thread|inline`` (where transactions run: a writer thread, or the event loop itself).
    * ``postgresql://user:password@host:port/database`` (or ``postgres://``): shared by several
      servers. Options: ``?schema=`` (default ``llamactl``; created when missing),
      ``?pool_size=`` (default 10), ``?connect_timeout=`` (seconds, default 10); others (such as
      ``sslmode``) go to the driver. Needs ``pip install 'llamactl[postgresql]'``.

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
    if scheme in ("postgresql", "postgres"):
        return _open_postgresql(uri)
    if scheme in _PLANNED:
        raise StateStoreError(
            f"state store URI {uri!r}: the {_PLANNED[scheme]} backend is not available yet: "
            "use sqlite:///<path> (persistent, the default), postgresql://... (shared) or memory://"
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


def redacted(uri: str) -> str:
    """``uri`` with its password (``user:password@``, ``?password=``) replaced by ``***`` (for
    messages and logs)."""
    uri = hide_query_password(uri)
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))


def _open_postgresql(uri: str) -> StateStore:
    shown = redacted(uri)
    parts = urlsplit(uri)
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    schema = options.pop("schema", "llamactl")
    if not _SCHEMA_NAME.fullmatch(schema):
        raise StateStoreError(
            f"state store URI {shown!r}: schema must be a plain identifier (letters, digits, _; at most 63), "
            f"not {schema!r}"
        )
    pool_size = int(_number(shown, options, "pool_size", "10", int))
    timeout = _number(shown, options, "connect_timeout", "10", float)
    if pool_size < 1 or timeout <= 0:
        raise StateStoreError(f"state store URI {shown!r}: pool_size must be >= 1 and connect_timeout > 0")
    try:
        # Lazily: asyncpg is an optional dependency (llamactl[postgresql]).
        from llamactl.server.state.postgresql import PostgreSQLStateStore  # noqa: PLC0415
    except ImportError as exc:
        raise StateStoreError(
            f"state store URI {shown!r} needs the PostgreSQL driver asyncpg ({exc}): "
            "pip install 'llamactl[postgresql]'"
        ) from None
    dsn = urlunsplit(parts._replace(scheme="postgresql", query=urlencode(options)))
    where = urlunsplit(urlsplit(shown)._replace(query=""))
    return PostgreSQLStateStore(dsn, schema=schema, pool_size=pool_size, where=where, connect_timeout=timeout)


def _number(
    shown: str, options: dict[str, str], name: str, default: str, kind: type[int] | type[float]
) -> float:
    raw = options.pop(name, default)
    try:
        return kind(raw)
    except ValueError:
        raise StateStoreError(f"state store URI {shown!r}: {name} must be a number, not {raw!r}") from None
