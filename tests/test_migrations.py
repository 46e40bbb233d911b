"""Migrations on a real database: the case-insensitive user indexes (0007) and their guard; leases on turns (0009)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from devops_agent import billing
from devops_agent.agent import turns
from devops_agent.billing.catalog import load_catalog
from devops_agent.billing.catalog_sync import sync_catalog
from devops_agent.db import Database
from devops_agent.migrate import alembic_config
from tests.factories import T0, make_user
from tests.old_books import OldBooks


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
        await make_user(s, username="Bob")  # email bob@example.com
    for username, email in (("bob", "bob-other@example.com"), ("Robert", "BOB@example.com")):
        with pytest.raises(IntegrityError):
            async with db.transaction() as s:
                await s.execute(_INSERT, {"u": username, "e": email})


async def test_a_keyed_turn_an_older_version_left_unanswered_is_recovered_after_0009(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        async with db.engine.connect() as conn:
            await conn.run_sync(_to("0012"))
            # A turn charged, then its process died (the old key scheme); rows as the engine of 0012 wrote them.
            old = OldBooks(conn)
            free = await old.tier("free", price="0.00", credits=20)
            user_id = await old.user("alice", now=T0)
            account = await old.account(
                user_id=user_id, tier_id=free, monthly=19, purchased=0, start=T0, end=T0 + timedelta(days=31)
            )
            await old.ledger(
                account=account, user_id=user_id, kind="monthly_grant", monthly=20, purchased=0, after=(20, 0), now=T0
            )
            conversation_id = (
                await conn.execute(
                    text(
                        "INSERT INTO conversations (user_id, title, created_at, updated_at) "
                        "VALUES (:u, 't', :t, :t) RETURNING id"
                    ),
                    {"u": user_id, "t": old.at(T0)},
                )
            ).scalar_one()
            usage = await old.usage(user_id=user_id, credits=1, now=T0)
            await old.ledger(
                account=account,
                user_id=user_id,
                kind="charge",
                monthly=-1,
                purchased=0,
                after=(19, 0),
                now=T0,
                key=f"u{user_id}:charge:chat:old-key:message",
                usage_log_id=usage,
            )
            await conn.execute(
                text(
                    "INSERT INTO messages (conversation_id, user_id, role, content, idempotency_key, created_at) "
                    "VALUES (:c, :u, 'user', 'hello', 'old-key', :t)"
                ),
                {"c": conversation_id, "u": user_id, "t": old.at(T0)},
            )
            await conn.commit()
        async with db.engine.connect() as conn:
            await conn.run_sync(_to("heads"))
            await conn.commit()
        async with db.transaction() as s:
            await sync_catalog(s, load_catalog())
        refunded = await turns.recover_expired(db, now=T0 + timedelta(minutes=5))
        assert [(r.user_id, r.charges, r.credits) for r in refunded] == [(user_id, 1, 1)]
        async with db.transaction() as s:
            assert (await billing.get_account(s, user_id=user_id, now=T0)).balance == 20
    finally:
        await db.dispose()
