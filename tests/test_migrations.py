"""Migrations on a real database: the case-insensitive user indexes (0007) and their guard."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from devops_agent.db import Database
from devops_agent.migrate import alembic_config
from tests.factories import make_user


def _to(revision: str):  # type: ignore[no-untyped-def]
    def run(connection: Connection) -> None:
        cfg = alembic_config()
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)

    return run


_INSERT = text(
    "INSERT INTO users (username, email, password_hash, is_admin, is_suspended, email_opt_out, created_at) "
    "VALUES (:u, :e, '-', false, false, false, CURRENT_TIMESTAMP)"
)


async def test_names_differing_only_by_case_stop_the_upgrade_and_are_named(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        async with db.engine.connect() as conn:
            await conn.run_sync(_to("0006"))
            await conn.execute(_INSERT, {"u": "Alice", "e": "alice@example.com"})
            await conn.execute(_INSERT, {"u": "alice", "e": "alice2@example.com"})
            await conn.commit()
        async with db.engine.connect() as conn:
            with pytest.raises(RuntimeError, match=r"users.username .*'alice' \(2 accounts\)"):
                await conn.run_sync(_to("0007"))
            await conn.rollback()
        async with db.engine.connect() as conn:  # resolved by hand, the upgrade goes through
            await conn.execute(text("UPDATE users SET username = 'alice2' WHERE username = 'alice'"))
            await conn.commit()
            await conn.run_sync(_to("0007"))
            await conn.commit()
            version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar_one()
        assert version == "0007"
    finally:
        await db.dispose()


async def test_the_database_refuses_a_name_or_email_that_differs_only_by_case(db: Database) -> None:
    async with db.transaction() as s:
        await make_user(s, username="Bob")  # email Bob@example.com
    for username, email in (("bob", "bob-other@example.com"), ("Robert", "BOB@example.com")):
        with pytest.raises(IntegrityError):
            async with db.transaction() as s:
                await s.execute(_INSERT, {"u": username, "e": email})
