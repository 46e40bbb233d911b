"""Login throttling with counters in the database, so the limit holds across workers.

Failed logins are counted per account (the name typed, lower-cased) and per client
address in fixed windows. Once a bucket has reached its limit, further attempts are
refused with 429 and ``Retry-After`` until the window ends, before the password is
even checked (so a correct guess in a locked window does not get in either). A
successful login clears the account's bucket, not the address's.

New accounts are counted per client address the same way (``RegistrationLimiter``):
each comes with the Free tier's monthly credits, so accounts are not handed out
without limit. There the count is bumped first and checked after, in the
registration's transaction, so concurrent registrations cannot overshoot the limit.

Each bucket is one row updated with an upsert (``INSERT ... ON CONFLICT DO UPDATE``
on both SQLite and PostgreSQL), so concurrent failures from several workers add up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from devops_agent.web.models import LoginThrottle


@dataclass(frozen=True)
class Limit:
    failures: int
    window: timedelta


ACCOUNT_LIMIT = Limit(failures=5, window=timedelta(minutes=15))
ADDRESS_LIMIT = Limit(failures=30, window=timedelta(minutes=15))
REGISTRATION_WINDOW = timedelta(hours=1)


@dataclass(frozen=True)
class Refusal:
    """An attempt refused: the bucket kind (``account`` or ``address``) and seconds to wait."""

    scope: str
    retry_after: int


class LoginLimiter:
    """Counts failed logins per account and per address; decides whether to let one through."""

    def __init__(self, account: Limit = ACCOUNT_LIMIT, address: Limit = ADDRESS_LIMIT) -> None:
        self.account = account
        self.address = address

    def _buckets(self, username: str, address: str) -> list[tuple[str, str, Limit]]:
        return [
            ("account", f"account:{username.strip().lower()}", self.account),
            ("address", f"address:{address}", self.address),
        ]

    async def check(self, session: AsyncSession, *, username: str, address: str, now: datetime) -> Refusal | None:
        """A refusal if either bucket is full in its current window, else None."""
        buckets = self._buckets(username, address)
        rows = await session.execute(
            select(LoginThrottle).where(LoginThrottle.bucket.in_([key for _, key, _ in buckets]))
        )
        found = {row.bucket: row for row in rows.scalars()}
        for scope, key, limit in buckets:
            row = found.get(key)
            refusal = _refusal(scope, row.failures, row.window_start, limit, now) if row else None
            if refusal is not None:
                return refusal
        return None

    async def record_failure(self, session: AsyncSession, *, username: str, address: str, now: datetime) -> None:
        """Add one failure to both buckets (a window that has ended starts again at one)."""
        for _, key, limit in self._buckets(username, address):
            await _bump(session, key, limit, now)

    async def record_success(self, session: AsyncSession, *, username: str) -> None:
        await session.execute(
            delete(LoginThrottle).where(LoginThrottle.bucket == f"account:{username.strip().lower()}")
        )


class RegistrationLimiter:
    """At most ``per_hour`` new accounts per client address and hour (0: no limit)."""

    def __init__(self, per_hour: int) -> None:
        self.limit = Limit(failures=per_hour, window=REGISTRATION_WINDOW) if per_hour > 0 else None

    async def check(self, session: AsyncSession, *, address: str, now: datetime) -> Refusal | None:
        """A refusal if the address has used up its registrations (a read, before the costly hashing)."""
        if self.limit is None:
            return None
        row = await session.get(LoginThrottle, _registration_bucket(address))
        return _refusal("address", row.failures, row.window_start, self.limit, now) if row else None

    async def count(self, session: AsyncSession, *, address: str, now: datetime) -> Refusal | None:
        """Count one registration in the caller's transaction; a refusal (roll back) if it is one too many."""
        if self.limit is None:
            return None
        count, window_start = await _bump(session, _registration_bucket(address), self.limit, now)
        if count <= self.limit.failures:
            return None
        return _refusal("address", count, window_start, self.limit, now)


def _registration_bucket(address: str) -> str:
    return f"register:{address}"


def _refusal(scope: str, count: int, window_start: datetime, limit: Limit, now: datetime) -> Refusal | None:
    """A refusal while a full bucket's window lasts, else None."""
    ends = window_start + limit.window
    if count < limit.failures or ends <= now:
        return None
    return Refusal(scope, max(1, math.ceil((ends - now).total_seconds())))


async def _bump(session: AsyncSession, bucket: str, limit: Limit, now: datetime) -> tuple[int, datetime]:
    """Add one to a bucket (a window that has ended starts again at one); return its count and window start."""
    dialect = session.get_bind().dialect.name
    insert: Any = postgresql.insert if dialect == "postgresql" else sqlite.insert
    table = LoginThrottle.__table__
    stmt = insert(table).values(bucket=bucket, window_start=now, failures=1)
    expired = table.c.window_start <= now - limit.window
    stmt = stmt.on_conflict_do_update(
        index_elements=[table.c.bucket],
        set_={
            "failures": case((expired, 1), else_=table.c.failures + 1),
            "window_start": case((expired, stmt.excluded.window_start), else_=table.c.window_start),
        },
    ).returning(table.c.failures, table.c.window_start)
    count, window_start = (await session.execute(stmt)).one()
    return int(count), window_start
