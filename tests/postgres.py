"""The real PostgreSQL server the tests use, one fresh schema per test.

``LLAMACTL_TEST_POSTGRES`` names the database (default: the local server's ``test`` database, trust
auth). Nothing is skipped when the server is missing: the test fails and says so, as CI requires.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from llamactl.server.state import StateStore, open_state_store
from tests.faults import SmallDisk, small_disk

__all__ = ["POSTGRES_DSN", "PostgresSchema", "full_disk_tablespace"]

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


@contextlib.asynccontextmanager
async def full_disk_tablespace() -> AsyncIterator[tuple[SmallDisk, PostgresSchema, str]]:
    """A tmpfs of 8 MB as a PostgreSQL tablespace of its own, a schema, and the tablespace's name
    (a store's URI takes ``&default_tablespace=<name>`` to keep its tables there)."""
    try:
        owner = pwd.getpwnam("postgres")
    except KeyError:
        pytest.fail("no `postgres` system user: the local PostgreSQL server must run as `postgres`")
    # Outside pytest's tmp_path (0700 to root): the PostgreSQL server must reach the folder.
    folder = Path(tempfile.mkdtemp(prefix="llamactl-pgdisk-"))
    os.chmod(folder, 0o755)
    name = f"llamactl_test_{uuid.uuid4().hex[:12]}"
    pg = PostgresSchema()
    with small_disk(folder / "disk", "8m") as disk:
        os.chown(disk.path, owner.pw_uid, owner.pw_gid)
        admin = await asyncpg.connect(POSTGRES_DSN)
        try:
            await admin.execute(f"CREATE TABLESPACE {name} LOCATION '{disk.path}'")
            try:
                yield disk, pg, name
            finally:
                disk.free()
                await admin.execute(f'DROP SCHEMA IF EXISTS "{pg.name}" CASCADE')
                await admin.execute(f"DROP TABLESPACE {name}")
        finally:
            await admin.close()
    with contextlib.suppress(OSError):
        shutil.rmtree(folder)
