"""The database layer's own promises: durable SQLite commits."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from devops_agent.db import Database

SQLITE = pytest.mark.parametrize("db", ["sqlite"], indirect=True)
FULL = 2  # PRAGMA synchronous: 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA


@SQLITE
async def test_sqlite_commits_are_synced_to_disk_on_every_connection(db: Database) -> None:
    """A confirmed purchase or charge survives a power loss: the WAL is synced at each commit."""
    async with db.transaction() as session:
        assert (await session.execute(text("PRAGMA synchronous"))).scalar_one() == FULL
    async with db.driver_transaction() as tx:  # the charge's hot path has a connection of its own
        assert tx.sqlite is not None
        assert tx.sqlite.execute("PRAGMA synchronous").fetchone()[0] == FULL
