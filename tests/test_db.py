"""The database layer's own promises: durable SQLite commits, migrations one process at a time."""

from __future__ import annotations

import asyncio
import os
import sys
from asyncio.subprocess import PIPE, STDOUT
from pathlib import Path

import pytest
from sqlalchemy import text

from devops_agent.billing.catalog import load_catalog
from devops_agent.db import Database, driver_sqlite_connection
from devops_agent.migrate import is_current
from tests.scratch_pg import brand_new_postgres

CLI = Path(sys.executable).with_name("devops-agent")

SQLITE = pytest.mark.parametrize("db", ["sqlite"], indirect=True)
FULL = 2  # PRAGMA synchronous: 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA


@SQLITE
async def test_sqlite_commits_are_synced_to_disk_on_every_connection(db: Database) -> None:
    """A confirmed purchase or charge survives a power loss: the WAL is synced at each commit."""
    async with db.transaction() as session:
        assert (await session.execute(text("PRAGMA synchronous"))).scalar_one() == FULL


@pytest.mark.postgres
async def test_processes_starting_together_on_a_new_postgres_database_migrate_in_turn(tmp_path: Path) -> None:
    """Four ``devops-agent init`` at once on a new database: one migrates and syncs the
    catalog, the others wait for it and find nothing to do; none fails."""
    async with brand_new_postgres() as url:
        env = {**os.environ, "DATABASE_URL": url}

        async def init() -> tuple[int, str]:
            process = await asyncio.create_subprocess_exec(
                str(CLI), "init", cwd=tmp_path, env=env, stdout=PIPE, stderr=STDOUT
            )
            output, _ = await asyncio.wait_for(process.communicate(), timeout=180)
            return process.returncode or 0, output.decode()

        results = await asyncio.gather(*(init() for _ in range(4)))
        for code, output in results:
            assert code == 0, output
        db = Database(url)
        try:
            assert await is_current(db)
            async with db.transaction() as session:
                names = (await session.execute(text("SELECT name FROM subscription_tiers"))).scalars().all()
            assert sorted(names) == sorted(t.name for t in load_catalog().tiers)
        finally:
            await db.dispose()


POSTGRES = pytest.mark.parametrize("db", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True)


async def _overlap(db: Database, keys: list[str]) -> int:
    """The most transactions that were open at once, one per key in ``keys``, each a short sleep."""
    inside = most = 0

    async def one(key: str) -> None:
        nonlocal inside, most
        async with db.transaction(queue=("account", key)) as session:
            inside += 1
            most = max(most, inside)
            await session.execute(text("SELECT pg_sleep(0.02)"))
            inside -= 1

    await asyncio.gather(*(one(k) for k in keys))
    return most


@POSTGRES
async def test_transactions_queued_on_one_account_run_one_at_a_time(db: Database) -> None:
    """A hot account's charges wait in the process, not on its row lock with a connection each."""
    assert await _overlap(db, ["hot"] * 8) == 1
    assert await _overlap(db, [f"a{n}" for n in range(8)]) > 1  # other accounts are not held up


@POSTGRES
async def test_a_failed_transaction_gives_the_next_in_its_queue_its_turn(db: Database) -> None:
    with pytest.raises(ZeroDivisionError):
        async with db.transaction(queue=("account", 1)):
            1 / 0  # noqa: B018
    async with asyncio.timeout(5), db.transaction(queue=("account", 1)) as session:
        assert (await session.execute(text("SELECT 1"))).scalar_one() == 1


async def test_a_lone_read_runs_without_begin_and_commit(db: Database) -> None:
    """The session cookie's check, on every request, costs its one statement: no transaction around it."""
    async with db.lone_reads() as session:
        assert (await session.execute(text("SELECT 1"))).scalar_one() == 1
        connection = await session.connection()
        raw = (await connection.get_raw_connection()).driver_connection
        if db.is_sqlite:
            assert not (await driver_sqlite_connection(connection)).in_transaction
        else:
            assert not raw.is_in_transaction()
    async with db.transaction() as session:  # the pooled connection is fit for a transaction after it
        assert (await session.execute(text("SELECT 2"))).scalar_one() == 2
