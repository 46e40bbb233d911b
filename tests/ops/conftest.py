"""A throw-away PostgreSQL database for tests that run real servers and cut their connections."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from devops_agent.billing.catalog import load_catalog
from devops_agent.billing.catalog_sync import sync_catalog
from devops_agent.db import Database
from devops_agent.migrate import upgrade
from tests.conftest import DEFAULT_PG


@pytest.fixture
async def scratch_postgres() -> AsyncIterator[str]:
    """A new, migrated and seeded PostgreSQL database of its own (dropped afterwards).

    Its own, not the suite's shared one: a test that terminates every backend of its
    database must not cut the suite's pooled connections too.
    """
    url = make_url(os.environ.get("TEST_DATABASE_URL", DEFAULT_PG))
    try:
        admin = await asyncpg.connect(
            url.set(drivername="postgresql").render_as_string(hide_password=False), timeout=30
        )
    except (OSError, asyncpg.PostgresError) as exc:
        if os.environ.get("REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL is required (REQUIRE_POSTGRES=1) but does not answer: {exc}")
        pytest.skip(f"PostgreSQL does not answer: {exc}")
    name = f"devops_agent_ops_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    database_url = url.set(database=name).render_as_string(hide_password=False)
    db = Database(database_url)
    try:
        await upgrade(db)
        async with db.transaction() as session:
            await sync_catalog(session, load_catalog())
        await db.dispose()
        yield database_url
    finally:
        await db.dispose()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
