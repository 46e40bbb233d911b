"""Apply Alembic migrations from inside the app's event loop, and check they are current.

Every process that starts (each uvicorn worker, ``devops-agent init``, a second server
during a deploy) migrates before it serves. On PostgreSQL they take turns under one
advisory lock, held until the migrating transaction ends: the first migrates, the
others wait for it and then find nothing to do. Without it, two workers on a new
database race on ``CREATE TABLE alembic_version`` and uvicorn stops the server. The
catalog sync that follows start-up takes the same lock (``take_startup_lock``).
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from devops_agent.db import Database

ROOT = Path(__file__).resolve().parents[2]


def alembic_config(database_url: str | None = None) -> Config:
    """The project's Alembic configuration (``alembic.ini`` at the repository root)."""
    ini = ROOT / "alembic.ini"
    if not ini.exists():
        raise RuntimeError(f"alembic.ini not found at {ini}: run DevOps Agent from its checkout")
    cfg = Config(str(ini))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    if database_url:
        cfg.attributes["database_url"] = database_url
    return cfg


def _upgrade(connection: Connection, cfg: Config) -> None:
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "heads")


SQLITE_MIGRATION_WAIT_SECONDS = 30.0
# pg_advisory_xact_lock's key: any constant of our own ("DevOpsAg" as a 64-bit integer).
STARTUP_LOCK_KEY = int.from_bytes(b"DevOpsAg", "big", signed=True)


async def take_startup_lock(connection: AsyncConnection | AsyncSession) -> None:
    """On PostgreSQL, wait for the start-up lock, held until this transaction ends."""
    bind = connection if isinstance(connection, AsyncConnection) else await connection.connection()
    if bind.dialect.name == "postgresql":
        await bind.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": STARTUP_LOCK_KEY})


async def upgrade(db: Database) -> None:
    """Bring the schema to the newest revision (never drops data); one process at a time.

    The lock is taken in the transaction Alembic then runs in (it sees a transaction
    already begun and leaves the commit to us), so the next process reads the new
    ``alembic_version`` only once the whole upgrade is committed.
    """
    cfg = alembic_config()
    async with db.engine.connect() as connection:
        if db.is_sqlite:  # another process may be writing: wait for it without blocking the loop
            await db.wait_for_write_lock(connection, wait=max(db.write_wait, SQLITE_MIGRATION_WAIT_SECONDS))
        await take_startup_lock(connection)
        await connection.run_sync(_upgrade, cfg)
        await connection.commit()


def _is_current(connection: Connection, heads: set[str]) -> bool:
    return set(MigrationContext.configure(connection).get_current_heads()) == heads


async def is_current(db: Database) -> bool:
    """Whether the database is at the newest revision (for ``/readyz``)."""
    heads = set(ScriptDirectory.from_config(alembic_config()).get_heads())
    async with db.engine.connect() as connection:
        return await connection.run_sync(_is_current, heads)
