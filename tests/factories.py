"""Plain functions that make test data through the real engine."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from devops_agent import billing
from devops_agent.billing.models import User, UserSubscription
from devops_agent.db import Database
from devops_agent.users import create_user

R = TypeVar("R")
T0 = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
_counter = itertools.count(1)


async def make_user(
    session: AsyncSession,
    *,
    username: str | None = None,
    now: datetime = T0,
    is_admin: bool = False,
    password_hash: str = "not-a-real-hash",
) -> User:
    """A user with a Free account opened at ``now``, made as registration makes one."""
    n = next(_counter)
    name = username or f"user{n}"
    return await create_user(
        session, username=name, email=f"{name}@example.com", password_hash=password_hash, now=now, is_admin=is_admin
    )


async def account(session: AsyncSession, user_id: int, now: datetime = T0) -> UserSubscription:
    return await billing.get_account(session, user_id=user_id, now=now)


async def gather_all(*aws: Awaitable[R]) -> list[R]:
    """Run awaitables concurrently and wait for every one before raising the first error,
    so no task of a failed test is still writing when the next test empties the tables."""
    results = await asyncio.gather(*aws, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results  # type: ignore[return-value]


async def balance_matching_ledger(db: Database, user_id: int, now: datetime = T0) -> int:
    """The user's balance, after asserting that it equals the ledger's sums."""
    async with db.transaction() as session:
        sub = await account(session, user_id, now)
        sums = await billing.ledger_sums(session, subscription_id=sub.id)
        assert sums == billing.Balance.of(sub)
        return sub.balance
