"""Fixtures of the end-to-end tests on shared backends (PostgreSQL + Redis)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from tests.postgres import PostgresSchema
from tests.server.mq.conftest import REDIS_URL


@pytest.fixture
async def backends() -> AsyncIterator[tuple[PostgresSchema, str]]:
    """A fresh PostgreSQL schema and Redis key prefix, removed afterwards."""
    pg, prefix = PostgresSchema(), f"llamactl-test-{uuid.uuid4().hex}:"
    yield pg, prefix
    await pg.drop()
    client = aioredis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=500)]
        if keys:
            await client.unlink(*keys)
    finally:
        await client.aclose()
