"""Database access: the declarative base, the engine and the one way to open a transaction.

Two databases are supported. PostgreSQL (asyncpg) is the production choice: many
workers and machines share it and row locks do the serialising. SQLite (aiosqlite)
is the embedded default; there a writer takes the whole database, so we

* open every transaction with ``BEGIN IMMEDIATE`` (the documented pysqlite fix:
  the driver's own transaction handling is turned off and we emit BEGIN
  ourselves), so that a transaction that later writes never deadlocks on a lock
  upgrade, and
* serialise transactions inside the process with an asyncio lock, because
  SQLite's busy wait is unfair and starves a waiting writer. The server runs one
  process on SQLite for the same reason.

Every balance change runs inside ``Database.transaction()``; services flush but
never commit, the caller of ``transaction()`` commits by leaving the block.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import MetaData, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

SQLITE_BUSY_TIMEOUT_MS = 30_000


class Base(DeclarativeBase):
    """Declarative base whose constraints get stable names (Alembic needs them)."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def async_url(database_url: str) -> URL:
    """Map a plain ``sqlite://`` or ``postgresql://`` URL to its async driver."""
    url = make_url(database_url)
    backend = url.get_backend_name()
    if backend == "sqlite":
        return url.set(drivername="sqlite+aiosqlite")
    if backend in ("postgresql", "postgres"):
        return url.set(drivername="postgresql+asyncpg")
    raise ValueError(f"unsupported database URL {url.render_as_string()!r}: use sqlite or postgresql")


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Stop pysqlite from issuing its own BEGIN; we emit BEGIN IMMEDIATE below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


class Database:
    """An engine, its session factory, and the in-process writer lock for SQLite."""

    def __init__(self, database_url: str, *, echo: bool = False, pool_size: int = 20) -> None:
        self.url = async_url(database_url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        kwargs: dict[str, Any] = {"echo": echo}
        if not self.is_sqlite:
            # No pre-ping: it costs a round trip on every checkout; stale connections are
            # recycled by age instead.
            kwargs.update(pool_size=pool_size, max_overflow=pool_size, pool_recycle=1800)
        self.engine = create_async_engine(self.url, **kwargs)
        if self.is_sqlite:
            _configure_sqlite(self.engine)
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)
        self._lock: asyncio.Lock | None = asyncio.Lock() if self.is_sqlite else None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """Open a session in one transaction: commit on success, roll back on error."""
        if self._lock is None:
            async with self.sessionmaker.begin() as session:
                yield session
            return
        async with self._lock, self.sessionmaker.begin() as session:
            yield session

    async def dispose(self) -> None:
        await self.engine.dispose()
