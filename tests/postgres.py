"""The real PostgreSQL server the tests use, one fresh schema per test.

``LLAMACTL_TEST_POSTGRES`` names the database (default: the local server's ``test`` database, trust
auth). Nothing is skipped when the server is missing: the test fails and says so, as CI requires.
"""

from __future__ import annotations

import os
import uuid

import asyncpg

from llamactl.server.state import StateStore, open_state_store

__all__ = ["POSTGRES_DSN", "PostgresSchema"]

POSTGRES_DSN = os.environ.get("LLAMACTL_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


class PostgresSchema:
    """A schema name of its own for one test; ``drop()`` removes whatever was created in it."""

    def __init__(self, dsn: str = POSTGRES_DSN) -> None:
        self.dsn = dsn
        self.name = "t_" + uuid.uuid4().hex[:20]

    @property
    def uri(self) -> str:
        """The state store URI of this schema."""
        sep = "&" if "?" in self.dsn else "?"
        return f"{self.dsn}{sep}schema={self.name}"

    def store(self, **options: str) -> StateStore:
        """A (not started) store on this schema, built the way a deployment file's URI is."""
        extra = "".join(f"&{k}={v}" for k, v in options.items())
        return open_state_store(self.uri + extra)

    async def drop(self) -> None:
        try:
            conn = await asyncpg.connect(self.dsn, timeout=10)
        except (OSError, asyncpg.PostgresError):
            return  # the server is gone: the test itself has failed and said why
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{self.name}" CASCADE')
        finally:
            await conn.close()
