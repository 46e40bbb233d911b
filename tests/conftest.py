"""Database fixtures: every database test runs on SQLite and on PostgreSQL.

Migrations run once per test session (``alembic upgrade heads``), as in production.
Each test then starts from an empty, migrated database with the pricing catalog:
on SQLite a copy of a migrated template file, on PostgreSQL a TRUNCATE of every
table. (We do not wrap tests in a rolled-back transaction: the concurrency tests
need many connections that really commit, which such a wrapper would hide.)

PostgreSQL comes from ``TEST_DATABASE_URL`` (default: the local server's ``test``
database); each test session creates a database of its own beside it and drops it
at the end. Without a server the PostgreSQL cases are skipped, unless
``REQUIRE_POSTGRES=1``, where they fail.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from devops_agent.billing.catalog import load_catalog
from devops_agent.billing.catalog_sync import sync_catalog
from devops_agent.config import get_settings
from devops_agent.db import Base, Database
from devops_agent.migrate import upgrade
from devops_agent.models import load_all_models

load_all_models()

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the browser tests last, wherever they live.

    Playwright's sync API leaves its event loop set as running in the main thread while
    the session's Chromium is open, and every async test after it would fail with
    "Runner.run() cannot be called from a running event loop". The sort is stable.
    """
    browser_dir = Path(__file__).parent / "browser"

    def is_browser(item: pytest.Item) -> bool:
        return item.get_closest_marker("browser") is not None or browser_dir in Path(str(item.fspath)).parents

    items.sort(key=is_browser)


async def _seed(db: Database) -> None:
    async with db.transaction() as session:
        await sync_catalog(session, load_catalog())


class Backends:
    """Databases made once per test session, on first use: a SQLite template, a PostgreSQL database."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._template: Path | None = None
        self._pg: Database | None = None
        self._pg_admin: asyncpg.Connection | None = None
        self._pg_name: str | None = None
        self.pg_url: str | None = None

    async def sqlite_template(self) -> Path:
        if self._template is None:
            path = self.root / "template.db"
            db = Database(f"sqlite:///{path}")
            await upgrade(db)
            await _seed(db)
            await db.dispose()
            self._template = path
        return self._template

    async def postgres(self) -> Database:
        if self._pg is not None:
            return self._pg
        base = os.environ.get("TEST_DATABASE_URL", DEFAULT_PG)
        url = make_url(base)
        admin_dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        try:
            self._pg_admin = await asyncpg.connect(admin_dsn, timeout=30)
        except (OSError, asyncpg.PostgresError) as exc:
            if os.environ.get("REQUIRE_POSTGRES") == "1":
                pytest.fail(f"PostgreSQL is required (REQUIRE_POSTGRES=1) but {base} does not answer: {exc}")
            pytest.skip(f"PostgreSQL at {base} does not answer: {exc}")
        self._pg_name = f"devops_agent_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        await self._pg_admin.execute(f'CREATE DATABASE "{self._pg_name}"')
        self.pg_url = url.set(database=self._pg_name).render_as_string(hide_password=False)
        db = Database(self.pg_url, pool_size=25)  # up to 50 connections: 50 concurrent charges
        await upgrade(db)
        self._pg = db
        return db

    async def close(self) -> None:
        if self._pg is not None:
            await self._pg.dispose()
        if self._pg_admin is not None:
            await self._pg_admin.execute(f'DROP DATABASE IF EXISTS "{self._pg_name}" WITH (FORCE)')
            await self._pg_admin.close()


@pytest.fixture(scope="session")
async def backends(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Backends]:
    registry = Backends(tmp_path_factory.mktemp("devops_agent"))
    yield registry
    await registry.close()


async def _truncate(db: Database) -> None:
    """Empty every table. Retried on a deadlock: a failed concurrency test can leave
    transactions of its tasks finishing while the next test starts."""
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    for attempt in range(5):
        try:
            async with db.engine.begin() as conn:
                await conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
            return
        except DBAPIError as exc:
            if "deadlock" not in str(exc) or attempt == 4:
                raise
            await asyncio.sleep(0.2 * (attempt + 1))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def db(request: pytest.FixtureRequest, backends: Backends, tmp_path: Path) -> AsyncIterator[Database]:
    """An empty migrated database with the pricing catalog, on each backend."""
    if request.param == "sqlite":
        path = tmp_path / "test.db"
        shutil.copyfile(await backends.sqlite_template(), path)
        database = Database(f"sqlite:///{path}")
        yield database
        await database.dispose()
    else:
        database = await backends.postgres()
        await _truncate(database)
        await _seed(database)
        yield database


@pytest.fixture
def database_url(db: Database) -> str:
    """The plain URL of the test database (for code that opens its own engine)."""
    return db.url.set(drivername=db.url.get_backend_name()).render_as_string(hide_password=False)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, database_url: str) -> Iterator[str]:
    """DATABASE_URL set to the test database, for the CLI commands (which read the settings)."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    get_settings.cache_clear()
    yield database_url
    get_settings.cache_clear()
