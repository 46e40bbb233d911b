"""Pruning of the web layer's bookkeeping tables, for a daily cron job (``devops-agent prune``).

Two tables only grow otherwise: ``idempotency_records`` (one row per keyed POST) and
``login_throttle`` (one row per account or address that ever failed a login, and
per address that registered).

* An idempotency record is kept for ``keep`` (default 30 days): a client retries within
  seconds or hours, and a key older than that is not a retry. Records left in progress
  by a dead process are released much sooner, past their lease, by a retry or by
  ``devops-agent recover`` (see ``web.idempotency``).
* A throttle row whose window ended longer ago than the longest window counts nothing:
  the next failure would start a new window anyway.

Neither table holds money: the ledger, purchases and usage logs are never pruned.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Result, delete

from devops_agent.db import Database
from devops_agent.web.models import IdempotencyRecord, LoginThrottle
from devops_agent.web.ratelimit import ACCOUNT_LIMIT, ADDRESS_LIMIT, REGISTRATION_WINDOW

DEFAULT_KEEP = timedelta(days=30)


@dataclass(frozen=True)
class Pruned:
    idempotency_records: int
    login_throttle: int


async def prune(db: Database, *, now: datetime, keep: timedelta = DEFAULT_KEEP) -> Pruned:
    """Delete idempotency records older than ``keep`` and throttle rows whose window has passed."""
    if keep <= timedelta(0):
        raise ValueError("keep must be a positive duration")
    longest_window = max(ACCOUNT_LIMIT.window, ADDRESS_LIMIT.window, REGISTRATION_WINDOW)
    async with db.transaction() as session:
        records = await session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.created_at < now - keep))
        throttle = await session.execute(delete(LoginThrottle).where(LoginThrottle.window_start < now - longest_window))
    return Pruned(idempotency_records=_count(records), login_throttle=_count(throttle))


def _count(result: Result[Any]) -> int:
    """Rows a DELETE removed (its result is a cursor result; the typed API hides rowcount)."""
    return int(cast(CursorResult[Any], result).rowcount)
