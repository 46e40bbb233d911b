"""`devops-agent prune`: old idempotency records, expired login-throttle rows and sessions go, the rest stays."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from devops_agent.billing.periods import utcnow
from devops_agent.cli import app
from devops_agent.db import Database
from devops_agent.web.housekeeping import prune
from devops_agent.web.models import IdempotencyRecord, LoginThrottle, UserSession
from tests.factories import T0, make_user


async def _fill(db: Database, now: datetime) -> None:
    """Idempotency records of 40, 29 and 1 day(s) ago (the oldest still in progress) and two throttle rows."""
    async with db.transaction() as s:
        user = await make_user(s)
        for key, age, done in (("old-in-flight", 40, False), ("recent", 29, True), ("fresh", 1, True)):
            s.add(
                IdempotencyRecord(
                    user_id=user.id,
                    key=key,
                    fingerprint="f" * 64,
                    status_code=200 if done else None,
                    response_body={"ok": True} if done else None,
                    created_at=now - timedelta(days=age),
                )
            )
        s.add(LoginThrottle(bucket="account:alice", window_start=now - timedelta(hours=2), failures=5))
        s.add(LoginThrottle(bucket="address:10.0.0.1", window_start=now - timedelta(minutes=5), failures=3))
        # Sessions of 31 days (its cookie has expired) and 29 days.
        s.add(UserSession(id_hash="a" * 64, user_id=user.id, created_at=now - timedelta(days=31)))
        s.add(UserSession(id_hash="b" * 64, user_id=user.id, created_at=now - timedelta(days=29)))


async def _left(db: Database) -> tuple[list[str], list[str]]:
    async with db.transaction() as s:
        keys = sorted((await s.scalars(select(IdempotencyRecord.key))).all())
        buckets = sorted((await s.scalars(select(LoginThrottle.bucket))).all())
        assert (await s.scalars(select(UserSession.id_hash))).all() == ["b" * 64]
    return keys, buckets


async def test_prune_keeps_what_a_retry_or_a_window_still_needs(db: Database) -> None:
    now = T0 + timedelta(days=60)
    await _fill(db, now)
    pruned = await prune(db, now=now)
    assert (pruned.idempotency_records, pruned.login_throttle, pruned.sessions) == (1, 1, 1)
    assert await _left(db) == (["fresh", "recent"], ["address:10.0.0.1"])
    again = await prune(db, now=now)  # nothing more to do
    assert (again.idempotency_records, again.login_throttle, again.sessions) == (0, 0, 0)
    shorter = await prune(db, now=now, keep=timedelta(days=7))
    assert shorter.idempotency_records == 1
    assert await _left(db) == (["fresh"], ["address:10.0.0.1"])
    with pytest.raises(ValueError, match="positive"):
        await prune(db, now=now, keep=timedelta(0))


async def test_prune_deletes_in_short_batches_until_nothing_is_left(db: Database) -> None:
    """A batch a transaction (SQLite's write lock is held briefly each time), all of them in the end."""
    now = T0 + timedelta(days=60)
    await _fill(db, now)
    pruned = await prune(db, now=now, keep=timedelta(days=7), batch=1)
    assert (pruned.idempotency_records, pruned.login_throttle) == (2, 1)
    assert await _left(db) == (["fresh"], ["address:10.0.0.1"])


async def test_cli_prune_reports_what_it_deleted(db: Database, env: str) -> None:
    await _fill(db, utcnow())
    runner = CliRunner()
    # The command runs its own event loop: run it off this test's loop.
    result = await asyncio.to_thread(runner.invoke, app, ["prune", "--keep-days", "10"])
    assert result.exit_code == 0, result.output
    assert (
        "Deleted 2 idempotency record(s) older than 10 day(s), 1 expired login-throttle row(s) "
        "and 1 expired session(s)." in result.output
    )
    assert await _left(db) == (["fresh"], ["address:10.0.0.1"])
    refused = await asyncio.to_thread(runner.invoke, app, ["prune", "--keep-days", "0"])
    assert refused.exit_code == 2
    assert "keep-days" in refused.output
