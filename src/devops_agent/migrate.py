"""Apply Alembic migrations from inside the app's event loop, and check they are current."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

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


async def upgrade(db: Database) -> None:
    """Bring the schema to the newest revision (never drops data)."""
    cfg = alembic_config()
    async with db.engine.connect() as connection:
        await connection.run_sync(_upgrade, cfg)
        await connection.commit()


def _is_current(connection: Connection, heads: set[str]) -> bool:
    return set(MigrationContext.configure(connection).get_current_heads()) == heads


async def is_current(db: Database) -> bool:
    """Whether the database is at the newest revision (for ``/readyz``)."""
    heads = set(ScriptDirectory.from_config(alembic_config()).get_heads())
    async with db.engine.connect() as connection:
        return await connection.run_sync(_is_current, heads)
