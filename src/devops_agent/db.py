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
  process on SQLite for the same reason;
* run SQLite calls inline on the event loop instead of in aiosqlite's worker
  thread. A SQLite statement takes microseconds, while each hop to the worker
  thread and back costs a GIL hand-off (measured: most of a charge's time). With
  transactions serialised and one pooled connection, nothing else could run
  during those microseconds anyway. The cost: a busy wait on a lock held by
  *another process* (a CLI command) blocks the loop for up to the busy timeout.

Every balance change runs inside ``Database.transaction()``; services flush but
never commit, the caller of ``transaction()`` commits by leaving the block. The one
exception is the charge's hot path, which needs neither the ORM nor a session:
``driver_transaction()`` gives it the bare driver connection in a transaction of its
own (same writer lock on SQLite), because SQLAlchemy's session and begin/commit cost
several times the four statements of a charge.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import aiosqlite
import asyncpg
from sqlalchemy import MetaData, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import AsyncAdaptedQueuePool

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

SQLITE_BUSY_TIMEOUT_MS = 30_000
# Every SQLite connection we open, pooled or not: WAL, foreign keys, a busy timeout, and
# an fsync of the WAL at every commit (synchronous=FULL). NORMAL syncs at checkpoints
# only, so a power loss could undo purchases and charges we had already confirmed; a
# ledger must not forget what it answered. ``make bench`` reports what FULL costs.
SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA foreign_keys=ON",
    f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
    "PRAGMA synchronous=FULL",
)


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


# Execution option of a snapshot's connection (see ``Database.snapshot``).
_READ_ONLY = "devops_agent_read_only"


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Stop pysqlite from issuing its own BEGIN; we emit BEGIN IMMEDIATE below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in SQLITE_PRAGMAS:
            cursor.execute(pragma)
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # A snapshot (``Database.snapshot``) only reads: a deferred BEGIN takes no writer lock.
        conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(_READ_ONLY) else "BEGIN IMMEDIATE")


# A unique constraint refused a row: from SQLAlchemy, or from sqlite3 on the raw hot path.
UNIQUE_VIOLATIONS: tuple[type[Exception], ...] = (IntegrityError, sqlite3.IntegrityError)


class _InlineCalls:
    """Stands in for aiosqlite's queue to its worker thread: runs each call at once."""

    def put_nowait(self, item: tuple[asyncio.Future[Any] | None, Callable[[], Any]]) -> None:
        future, function = item
        try:
            result = function()
        except BaseException as exc:  # handed to the awaiting coroutine, as aiosqlite does
            if future is not None and not future.done():
                future.set_exception(exc)
        else:
            if future is not None and not future.done():
                future.set_result(result)


class InlineSQLiteConnection(aiosqlite.Connection):
    """An aiosqlite connection whose calls run on the caller's thread (no worker thread)."""

    def __init__(self, connector: Callable[[], sqlite3.Connection]) -> None:
        super().__init__(connector, iter_chunk_size=64)
        self._tx = _InlineCalls()  # type: ignore[assignment]

    def __await__(self) -> Generator[Any, None, aiosqlite.Connection]:
        return self._connect().__await__()

    @property
    def sqlite_connection(self) -> sqlite3.Connection:
        """The sqlite3 connection underneath, for statements run in a batch."""
        return self._conn


async def driver_sqlite_connection(connection: AsyncConnection) -> sqlite3.Connection:
    """The sqlite3 connection behind a SQLAlchemy connection, in its current transaction."""
    raw = await connection.get_raw_connection()
    driver = raw.driver_connection
    if not isinstance(driver, InlineSQLiteConnection):
        raise TypeError("not a DevOps Agent SQLite connection")
    return driver.sqlite_connection


def _inline_sqlite_creator(path: str) -> Callable[[], Awaitable[aiosqlite.Connection]]:
    async def connect() -> aiosqlite.Connection:
        return await InlineSQLiteConnection(lambda: sqlite3.connect(path, check_same_thread=False))

    return connect


def _sqlite_driver_connection(path: str) -> sqlite3.Connection:
    """A sqlite3 connection set up like the pool's, for the charge's hot path."""
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    for pragma in SQLITE_PRAGMAS:
        connection.execute(pragma)
    return connection


@dataclass(frozen=True)
class DriverTransaction:
    """A driver connection inside an open transaction: exactly one of the two is set."""

    sqlite: sqlite3.Connection | None = None
    postgres: asyncpg.Connection | None = None


# Set while the current task is inside Database.transaction().
_inside_transaction: ContextVar[bool] = ContextVar("inside_transaction", default=False)


async def _keep_session(_connection: asyncpg.Connection) -> None:
    """No reset query on release: the hot path leaves no session state behind, only a
    finished transaction (asyncpg rolls back an open one itself). Saves a round trip."""


class Database:
    """An engine, its session factory, and the in-process writer lock for SQLite."""

    def __init__(self, database_url: str, *, echo: bool = False, pool_size: int = 20) -> None:
        self.url = async_url(database_url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        kwargs: dict[str, Any] = {"echo": echo}
        if self.is_sqlite:
            # One connection: transactions are serialised anyway, and a second connection
            # could only busy-wait (blocking the loop, since calls run inline).
            kwargs.update(
                async_creator=_inline_sqlite_creator(self.url.database or ":memory:"),
                poolclass=AsyncAdaptedQueuePool,
                pool_size=1,
                max_overflow=0,
                pool_timeout=60,
            )
        else:
            # No pre-ping: it costs a round trip on every checkout; stale connections are
            # recycled by age instead.
            kwargs.update(pool_size=pool_size, max_overflow=pool_size, pool_recycle=1800)
        self.engine = create_async_engine(self.url, **kwargs)
        if self.is_sqlite:
            _configure_sqlite(self.engine)
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)
        self._lock: asyncio.Lock | None = asyncio.Lock() if self.is_sqlite else None
        self._sqlite_path = self.url.database or ":memory:"
        self._sqlite_driver: sqlite3.Connection | None = None
        self._pool_size = pool_size
        self._driver_pool: asyncpg.Pool | None = None
        self._driver_pool_lock = asyncio.Lock()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """Open a session in one transaction: commit on success, roll back on error."""
        token = _inside_transaction.set(True)
        try:
            if self._lock is None:
                async with self.sessionmaker.begin() as session:
                    yield session
                return
            async with self._lock, self.sessionmaker.begin() as session:
                yield session
        finally:
            _inside_transaction.reset(token)

    @asynccontextmanager
    async def driver_transaction(self) -> AsyncIterator[DriverTransaction]:
        """A transaction on the bare driver connection: commit on success, roll back on error.

        For the charge's hot path only (see the module docstring). SQLite: a second
        connection of our own under the same writer lock, its statements run inline
        (nothing else can write meanwhile). PostgreSQL: a small asyncpg pool of its own
        beside the engine's, because checking a connection out of SQLAlchemy's pool and
        back costs about 0.3 ms, as much as two of the charge's statements. A quarter of
        ``pool_size`` connections at most: a charge holds one for about a millisecond
        (measured: 16 workers charging through 4 connections keep the raw loop's rate).
        """
        if _inside_transaction.get():
            # It would wait for the caller's own writer lock (SQLite) or row lock (PostgreSQL).
            raise RuntimeError("a driver transaction cannot be opened inside Database.transaction()")
        if self._lock is None:
            pool = self._driver_pool or await self._open_driver_pool()
            async with pool.acquire() as connection, connection.transaction():
                yield DriverTransaction(postgres=connection)
            return
        async with self._lock:
            if self._sqlite_driver is None:
                if self._sqlite_path == ":memory:":
                    raise RuntimeError("an in-memory SQLite database has no second connection")
                self._sqlite_driver = _sqlite_driver_connection(self._sqlite_path)
            connection = self._sqlite_driver
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield DriverTransaction(sqlite=connection)
                connection.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[AsyncConnection]:
        """A read-only connection whose statements all see one consistent state, for long reads.

        It never blocks a writer: on SQLite a deferred BEGIN (in WAL mode a reader takes
        no lock and sees the database as of its first read), on PostgreSQL a REPEATABLE
        READ, READ ONLY transaction. It does not take the in-process writer lock either, so
        on SQLite (one pooled connection) use it from a process of its own (the CLI).
        """
        async with self.engine.connect() as connection:
            if self.is_sqlite:
                await connection.execution_options(**{_READ_ONLY: True})
            else:
                await connection.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
            async with connection.begin():
                yield connection

    @property
    def driver_pool(self) -> asyncpg.Pool | None:
        """The charge's asyncpg pool once opened (PostgreSQL), for the metrics of pool use."""
        return self._driver_pool

    async def _open_driver_pool(self) -> asyncpg.Pool:
        """The hot path's asyncpg pool, opened on first use (it needs the running loop)."""
        async with self._driver_pool_lock:
            if self._driver_pool is None:
                self._driver_pool = await asyncpg.create_pool(
                    self.url.set(drivername="postgresql").render_as_string(hide_password=False),
                    min_size=0,
                    max_size=max(1, self._pool_size // 4),
                    reset=_keep_session,
                )
            return self._driver_pool

    async def dispose(self) -> None:
        if self._driver_pool is not None:
            await self._driver_pool.close()
            self._driver_pool = None
        if self._sqlite_driver is not None:
            self._sqlite_driver.close()
            self._sqlite_driver = None
        await self.engine.dispose()
