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
  during those microseconds anyway;
* never busy-wait on the loop for a lock held by *another process* (a cron
  ``reset-due``, a backup, ``sqlite3`` in a shell): the busy timeout is a few
  milliseconds, and a write transaction waits for the write lock with asyncio
  sleeps between tries, without holding our own lock or connection meanwhile, for
  at most ``write_wait`` seconds (2 in the server), then raises ``DatabaseBusy``
  (503 with Retry-After). Read-only transactions (``write=False``) start with a
  plain ``BEGIN``: in WAL mode they read on while another process writes. The CLI
  waits longer (30 s) and writes in short transactions.

Every balance change runs inside ``Database.transaction()``; services flush but
never commit, the caller of ``transaction()`` commits by leaving the block.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Hashable
from contextlib import asynccontextmanager, nullcontext
from typing import Any, cast

import aiosqlite
import asyncpg
from sqlalchemy import CursorResult, MetaData, Result, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url
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

# Short: a busy wait blocks the event loop (calls run inline). Waits for the write lock
# happen at BEGIN IMMEDIATE, in ``Database._sqlite_begun``, with asyncio sleeps instead.
SQLITE_BUSY_TIMEOUT_MS = 20
SERVER_WRITE_WAIT_SECONDS = 2.0
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


# An execution option: the connection runs lone reads, each statement its own transaction.
LONE_READS = "devops_agent_lone_reads"


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
        # Database.transaction() has begun already (BEGIN IMMEDIATE for writers, waited
        # for without blocking the loop). Anything else (readiness probe, migrations'
        # own connection) reads first: a deferred BEGIN does not wait on another
        # process's writer.
        if conn.get_execution_options().get(LONE_READS):
            return  # ``Database.lone_reads()``: each statement is its own transaction
        if not conn.connection.driver_connection.sqlite_connection.in_transaction:
            conn.exec_driver_sql("BEGIN")


def _configure_postgres(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "checkout")
    def _on_checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        # A connection whose server went away (restart, failover, pg_terminate_backend) is
        # known closed by asyncpg as soon as the loop read its end: swap it for a new one
        # now (the pool retries the checkout) instead of failing the request with it. No
        # round trip, unlike pool_pre_ping. A connection cut while in use still fails
        # that one request (503); SQLAlchemy then invalidates it and the pool's older
        # connections.
        if dbapi_connection.driver_connection.is_closed():
            raise sa_exc.DisconnectionError("the pooled connection was closed by the server")


class DatabaseBusy(Exception):
    """Another process held SQLite's write lock for longer than we wait (a CLI command, a
    backup). Nothing was written; retry in a moment."""


# Raised by asyncpg (under SQLAlchemy's adapter) when the
# server is out of reach: the connection was lost or refused, the server is shutting
# down or restarting, or has no connection slot left.
_ASYNCPG_UNAVAILABLE: tuple[type[Exception], ...] = (
    asyncpg.PostgresConnectionError,  # includes "connection was closed in the middle of operation"
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, crash shutdown, cannot connect now
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
    asyncpg.InterfaceError,  # "connection is closed", a pool being closed
    asyncpg.exceptions.LockNotAvailableError,  # lock_timeout, NOWAIT
    asyncpg.exceptions.DeadlockDetectedError,  # the server rolled one side back: retry it
)


def rowcount(result: Result[Any]) -> int:
    """Rows an UPDATE or DELETE matched (its result is a cursor result; the typed API hides rowcount)."""
    return int(cast(CursorResult[Any], result).rowcount)


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means the database is out of reach for now, not a bug: a lost or
    refused connection, a pool timeout, a lock held elsewhere. The request's transaction
    did not commit; the same request can be retried in a moment (the web layer answers
    503 with Retry-After)."""
    if isinstance(exc, DatabaseBusy | sa_exc.TimeoutError | sa_exc.DisconnectionError):
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated or isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError):
            return True
        return any(is_unavailable(e) for e in (exc.orig, exc.__cause__) if e is not None and e is not exc)
    if isinstance(exc, _ASYNCPG_UNAVAILABLE):
        return True
    if isinstance(exc, sqlite3.OperationalError):  # locked, busy, disk I/O, cannot open the file
        return True
    if isinstance(exc, ConnectionError | TimeoutError):  # refused, reset; connect or acquire timeout
        return True
    # SQLAlchemy's adapter wraps the driver's error in one of its own, raised from it.
    cause = exc.__cause__
    return (
        cause is not None
        and cause is not exc
        and type(exc).__module__.startswith("sqlalchemy")
        and is_unavailable(cause)
    )


def _is_sqlite_busy(exc: sqlite3.OperationalError) -> bool:
    """SQLITE_BUSY or SQLITE_LOCKED (any extended code): another connection holds the lock."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return "locked" in str(exc) or "busy" in str(exc)
    return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _try_begin(connection: sqlite3.Connection, *, write: bool) -> bool:
    """Begin a transaction; False when another process holds the write lock (nothing begun)."""
    try:
        connection.execute("BEGIN IMMEDIATE" if write else "BEGIN")
    except sqlite3.OperationalError as exc:
        if _is_sqlite_busy(exc):
            return False
        raise
    return True


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
        """The sqlite3 connection underneath (our own BEGIN, and the wait for the write lock)."""
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


async def _wait_for_writer(deadline: float, delay: float) -> float:
    """Sleep before the next try at SQLite's write lock (backing off up to 50 ms); the
    next delay. ``DatabaseBusy`` once ``deadline`` (loop time) has passed."""
    remaining = deadline - asyncio.get_running_loop().time()
    if remaining <= 0:
        raise DatabaseBusy("another process holds the SQLite write lock")
    await asyncio.sleep(min(delay, remaining))
    return min(delay * 2, 0.05)


class KeyedQueue:
    """One asyncio lock per key, kept only while someone holds or awaits it (FIFO, as
    asyncio locks are)."""

    def __init__(self) -> None:
        self._locks: dict[Hashable, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def turn(self, key: Hashable) -> AsyncIterator[None]:
        lock, users = self._locks.get(key) or (asyncio.Lock(), 0)
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class Database:
    """An engine, its session factory, and the in-process writer lock for SQLite.

    ``write_wait``: how long a SQLite write transaction waits for a write lock held by
    another process before ``DatabaseBusy`` (short in the server, longer for the CLI).
    """

    def __init__(
        self,
        database_url: str,
        *,
        echo: bool = False,
        pool_size: int = 20,
        write_wait: float = SERVER_WRITE_WAIT_SECONDS,
    ) -> None:
        self.write_wait = write_wait
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
            # No pre-ping: it costs a round trip on every checkout. A connection the server
            # closed is replaced at checkout (``_configure_postgres``), others are recycled
            # by age.
            kwargs.update(pool_size=pool_size, max_overflow=pool_size, pool_recycle=1800)
        self.engine = create_async_engine(self.url, **kwargs)
        if self.is_sqlite:
            _configure_sqlite(self.engine)
        else:
            _configure_postgres(self.engine)
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)
        self._lock: asyncio.Lock | None = asyncio.Lock() if self.is_sqlite else None
        self._queues = KeyedQueue()

    @asynccontextmanager
    async def transaction(self, *, write: bool = True, queue: Hashable | None = None) -> AsyncIterator[AsyncSession]:
        """Open a session in one transaction: commit on success, roll back on error.

        ``write=False`` promises reads (mostly): on SQLite the transaction does not take
        the write lock up front, so it runs while another process writes; a write in it
        then fails at once if that process still holds the lock (503, not a wait).
        PostgreSQL ignores it.

        ``queue``: a key naming the row the transaction will lock (an account, for a
        charge). On PostgreSQL, transactions of this process with the same key run one
        at a time, queued in the process before they take a connection: a hot account
        then has at most one session per worker waiting on its row lock, instead of
        every concurrent request holding a pooled connection while it waits. SQLite
        transactions are serialised already.
        """
        if self._lock is None:
            queued = self._queues.turn(queue) if queue is not None else nullcontext()
            async with queued, self.sessionmaker.begin() as session:
                yield session
            return
        async with (
            self._sqlite_begun(write=write) as connection,
            self.sessionmaker(bind=connection) as session,
            session.begin(),
        ):
            yield session

    @asynccontextmanager
    async def lone_reads(self) -> AsyncIterator[AsyncSession]:
        """A session for reads that need no transaction around them (one SELECT, such as
        a session cookie's check): each statement runs in autocommit, without BEGIN and
        COMMIT. PostgreSQL: one round trip instead of three. SQLite: under the writer
        lock (its one connection is shared), in WAL mode a lone SELECT reads one snapshot."""
        if self._lock is None:
            async with self.sessionmaker() as session:
                await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
                yield session
            return
        async with self._lock, self.engine.connect() as connection:
            await connection.execution_options(**{LONE_READS: True})
            async with self.sessionmaker(bind=connection) as session:
                yield session

    @asynccontextmanager
    async def _sqlite_begun(self, *, write: bool) -> AsyncIterator[AsyncConnection]:
        """The pooled SQLite connection under our writer lock, its transaction begun.

        While another process holds the write lock, neither our lock nor the connection
        is held between tries: reads and ``/healthz`` go on meanwhile.
        """
        deadline = asyncio.get_running_loop().time() + self.write_wait
        delay = 0.002
        while True:
            assert self._lock is not None
            async with self._lock, self.engine.connect() as connection:
                driver = await driver_sqlite_connection(connection)
                if _try_begin(driver, write=write):
                    try:
                        yield connection
                    finally:
                        if driver.in_transaction:  # the session left without a statement
                            driver.execute("ROLLBACK")
                    return
            delay = await _wait_for_writer(deadline, delay)

    async def wait_for_write_lock(self, connection: AsyncConnection, *, wait: float) -> None:
        """Begin ``connection``'s transaction with the SQLite write lock, waiting up to
        ``wait`` seconds without blocking the loop (migrations at start-up). Caller holds
        the connection; nothing else of ours can write meanwhile."""
        driver = await driver_sqlite_connection(connection)
        deadline = asyncio.get_running_loop().time() + wait
        delay = 0.002
        while not _try_begin(driver, write=True):
            delay = await _wait_for_writer(deadline, delay)

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[AsyncConnection]:
        """A read-only connection whose statements all see one consistent state, for long reads.

        It never blocks a writer: on SQLite a deferred BEGIN (in WAL mode a reader takes
        no lock and sees the database as of its first read), on PostgreSQL a REPEATABLE
        READ, READ ONLY transaction. It does not take the in-process writer lock either, so
        on SQLite (one pooled connection) use it from a process of its own (the CLI).
        """
        async with self.engine.connect() as connection:
            if not self.is_sqlite:  # SQLite's connection begins deferred outside ``transaction()``
                await connection.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
            async with connection.begin():
                yield connection

    async def dispose(self) -> None:
        await self.engine.dispose()
