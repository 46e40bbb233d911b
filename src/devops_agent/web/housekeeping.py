"""Pruning of the web layer's bookkeeping tables, for a daily cron job (``devops-agent prune``).

Three tables only grow otherwise: ``idempotency_records`` (one row per keyed POST),
``login_throttle`` (one row per account or address that ever failed a login, and
per address that registered) and ``user_sessions`` (one row per login not logged out).

* An idempotency record is kept for ``keep`` (default 30 days): a client retries within
  seconds or hours, and a key older than that is not a retry. Records left in progress
  by a dead process are released much sooner, past their lease, by a retry or by
  ``devops-agent recover`` (see ``web.idempotency``).
* A throttle row whose window ended longer ago than the longest window counts nothing:
  the next failure would start a new window anyway.
* A session older than the session cookie's lifetime (30 days) can no longer be used:
  its cookie no longer verifies.

Neither table holds money: the ledger, purchases and usage logs are never pruned.
Rows go in batches of ``batch``, a transaction each, so that on SQLite the command never
holds the write lock for long while the server runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, delete, select
from sqlalchemy.orm import InstrumentedAttribute

from devops_agent.db import Database, rowcount
from devops_agent.web.models import IdempotencyRecord, LoginThrottle, UserSession
from devops_agent.web.ratelimit import ACCOUNT_LIMIT, ADDRESS_LIMIT, REGISTRATION_WINDOW
from devops_agent.web.security import SESSION_MAX_AGE

DEFAULT_KEEP = timedelta(days=30)
BATCH = 500


@dataclass(frozen=True)
class Pruned:
    idempotency_records: int
    login_throttle: int
    sessions: int = 0


async def prune(db: Database, *, now: datetime, keep: timedelta = DEFAULT_KEEP, batch: int = BATCH) -> Pruned:
    """Delete idempotency records older than ``keep``, throttle rows whose window has passed and expired sessions."""
    if keep <= timedelta(0):
        raise ValueError("keep must be a positive duration")
    longest_window = max(ACCOUNT_LIMIT.window, ADDRESS_LIMIT.window, REGISTRATION_WINDOW)
    records = await _delete_in_batches(db, IdempotencyRecord.id, IdempotencyRecord.created_at < now - keep, batch=batch)
    throttle = await _delete_in_batches(
        db, LoginThrottle.bucket, LoginThrottle.window_start < now - longest_window, batch=batch
    )
    sessions = await _delete_in_batches(
        db, UserSession.id_hash, UserSession.created_at < now - timedelta(seconds=SESSION_MAX_AGE), batch=batch
    )
    return Pruned(idempotency_records=records, login_throttle=throttle, sessions=sessions)


async def _delete_in_batches(
    db: Database, key: InstrumentedAttribute[Any], condition: ColumnElement[bool], *, batch: int
) -> int:
    """Delete the rows matching ``condition``, ``batch`` rows a transaction; how many went."""
    table = key.class_
    deleted = 0
    while True:
        async with db.transaction() as session:
            chosen = select(key).where(condition).limit(batch)
            done = rowcount(await session.execute(delete(table).where(key.in_(chosen))))
        deleted += done
        if done < batch:
            return deleted
