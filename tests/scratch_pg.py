"""Brand-new PostgreSQL databases for tests that need one of their own (a fresh start,
connections cut with ``pg_terminate_backend``) instead of the session's shared one."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import DEFAULT_PG


def _base_url() -> str:
    return os.environ.get("TEST_DATABASE_URL", DEFAULT_PG)


async def admin_connection() -> asyncpg.Connection:
    """A connection to the test server's own database (skip, or fail under REQUIRE_POSTGRES=1)."""
    base = _base_url()
    dsn = make_url(base).set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        return await asyncpg.connect(dsn, timeout=30)
    except (OSError, asyncpg.PostgresError) as exc:
        if os.environ.get("REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL is required (REQUIRE_POSTGRES=1) but {base} does not answer: {exc}")
        pytest.skip(f"PostgreSQL at {base} does not answer: {exc}")


@asynccontextmanager
async def brand_new_postgres() -> AsyncIterator[str]:
    """An empty database created for one test and dropped afterwards; yields its plain URL."""
    name = f"devops_agent_fresh_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = await admin_connection()
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield (
                make_url(_base_url()).set(drivername="postgresql", database=name).render_as_string(hide_password=False)
            )
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def terminate_backends(database: str) -> int:
    """``pg_terminate_backend`` every connection to ``database``; how many there were."""
    admin = await admin_connection()
    try:
        pids = await admin.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", database
        )
        for row in pids:
            await admin.execute("SELECT pg_terminate_backend($1)", row["pid"])
        for _ in range(200):  # until the server has closed them all
            gone = await admin.fetchval(
                "SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = ANY($1::int[])", [r["pid"] for r in pids]
            )
            if gone:
                break
            await asyncio.sleep(0.05)
        return len(pids)
    finally:
        await admin.close()
