"""The charge's hot path as plain SQL, run on the driver inside the session's transaction.

A personal charge is four statements: lock and read the account, the conditional
UPDATE ... RETURNING that spends (monthly first, then purchased), the usage log INSERT
and the ledger INSERT. Built through the ORM, each statement costs more Python than
the database needs to run it; here they are written once and executed on the driver
connection of the session (same connection, same transaction), so a charge costs
little more than the database work. ``make bench`` runs the very same strings on a
bare driver loop to show the difference.

Only the common case takes this path: an existing personal account, in its period,
with enough credits. Anything else (no account, a period to reset, too few credits,
an organization's pool) returns ``None`` and the general path in ``credits`` handles
it, with its errors.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncSession

from devops_agent.db import Database, driver_sqlite_connection

SELECT = (
    "SELECT id, credits_remaining, purchased_credits_remaining, current_period_end "
    "FROM user_subscriptions WHERE user_id = {p1}{lock}"
)
UPDATE = (
    "UPDATE user_subscriptions SET credits_remaining = credits_remaining - {p1}, "
    "purchased_credits_remaining = purchased_credits_remaining - {p2}, "
    "credits_used_this_month = credits_used_this_month + {p3}, total_credits_used = total_credits_used + {p3}, "
    "updated_at = {p4} WHERE id = {p5} AND credits_remaining >= {p1} AND purchased_credits_remaining >= {p2} "
    "RETURNING credits_remaining, purchased_credits_remaining"
)
INSERT_USAGE = (
    "INSERT INTO usage_logs (user_id, conversation_id, action_type, tool_name, credits_used, success, created_at) "
    "VALUES ({p1}, {p2}, {p3}, {p4}, {p5}, {true}, {p6}) RETURNING id"
)
INSERT_LEDGER = (
    "INSERT INTO credit_ledger (subscription_id, user_id, kind, monthly_delta, purchased_delta, "
    "monthly_balance_after, purchased_balance_after, usage_log_id, idempotency_key, created_at) "
    "VALUES ({p1}, {p2}, 'charge', {p3}, {p4}, {p5}, {p6}, {p7}, {p8}, {p9}) RETURNING id"
)


# A constraint refused a row on the bare driver (a taken idempotency key, a missing conversation).
DRIVER_INTEGRITY_ERRORS: tuple[type[Exception], ...] = (
    sqlite3.IntegrityError,
    asyncpg.IntegrityConstraintViolationError,
)


def render(template: str, dialect: str) -> str:
    """The statement in the driver's parameter style: ``?n`` for sqlite3, ``$n`` for asyncpg."""
    if dialect == "sqlite":
        marks = {f"p{i}": f"?{i}" for i in range(1, 10)}
        return template.format(lock="", true="1", **marks)
    marks = {f"p{i}": f"${i}" for i in range(1, 10)}
    return template.format(lock=" FOR UPDATE", true="TRUE", **marks)


SQLITE = {
    name: render(t, "sqlite")
    for name, t in (("select", SELECT), ("update", UPDATE), ("usage", INSERT_USAGE), ("ledger", INSERT_LEDGER))
}
POSTGRES = {
    name: render(t, "postgresql")
    for name, t in (("select", SELECT), ("update", UPDATE), ("usage", INSERT_USAGE), ("ledger", INSERT_LEDGER))
}


def sqlite_timestamp(moment: datetime) -> str:
    """A UTC instant as SQLAlchemy stores DATETIME on SQLite (naive, microseconds)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


@dataclass(frozen=True)
class Charge:
    """What one charge writes: who pays, how much, for what, under which ledger key."""

    user_id: int
    amount: int
    action_type: str
    tool_name: str | None
    conversation_id: int | None
    key: str
    now: datetime


@dataclass(frozen=True)
class Spent:
    subscription_id: int
    from_monthly: int
    monthly_after: int
    purchased_after: int
    usage_log_id: int
    ledger_id: int


def _sqlite_spend(conn: sqlite3.Connection, c: Charge) -> Spent | None:
    stamp = sqlite_timestamp(c.now)
    row = conn.execute(SQLITE["select"], (c.user_id,)).fetchone()
    if row is None or row[3] <= stamp or row[1] + row[2] < c.amount:
        return None
    sub_id, from_monthly, from_purchased = _split(row, c.amount)
    after = conn.execute(SQLITE["update"], (from_monthly, from_purchased, c.amount, stamp, sub_id)).fetchone()
    if after is None:  # pragma: no cover - the balance was read in this same transaction
        return None
    (usage_id,) = conn.execute(
        SQLITE["usage"], (c.user_id, c.conversation_id, c.action_type, c.tool_name, c.amount, stamp)
    ).fetchone()
    (ledger_id,) = conn.execute(
        SQLITE["ledger"],
        (sub_id, c.user_id, -from_monthly, -from_purchased, after[0], after[1], usage_id, c.key, stamp),
    ).fetchone()
    return Spent(sub_id, from_monthly, after[0], after[1], usage_id, ledger_id)


def _split(account: Any, amount: int) -> tuple[int, int, int]:
    """The account's id and how ``amount`` splits: monthly credits first, then purchased."""
    from_monthly = min(int(account[1]), amount)
    return int(account[0]), from_monthly, amount - from_monthly


# One statement on PostgreSQL, returning its first row: asyncpg's own call, or the same
# statement through a SQLAlchemy session's connection.
FetchRow = Callable[[str, tuple[Any, ...]], Awaitable[Any]]


async def _postgres_spend(fetchrow: FetchRow, c: Charge) -> Spent | None:
    row = await fetchrow(POSTGRES["select"], (c.user_id,))
    if row is None or row[3] <= c.now or row[1] + row[2] < c.amount:
        return None
    sub_id, from_monthly, from_purchased = _split(row, c.amount)
    after = await fetchrow(POSTGRES["update"], (from_monthly, from_purchased, c.amount, c.now, sub_id))
    if after is None:  # pragma: no cover - the row is locked by this transaction
        return None
    (usage_id,) = await fetchrow(
        POSTGRES["usage"], (c.user_id, c.conversation_id, c.action_type, c.tool_name, c.amount, c.now)
    )
    (ledger_id,) = await fetchrow(
        POSTGRES["ledger"],
        (sub_id, c.user_id, -from_monthly, -from_purchased, after[0], after[1], usage_id, c.key, c.now),
    )
    return Spent(sub_id, from_monthly, int(after[0]), int(after[1]), int(usage_id), int(ledger_id))


async def spend_alone(db: Database, charge: Charge) -> Spent | None:
    """Charge a personal account in a driver transaction of its own, or return None.

    None (nothing written) sends the caller to the general path. A constraint
    violation (``DRIVER_INTEGRITY_ERRORS``: the idempotency key is taken by a first
    try, a conversation is missing) propagates after the transaction is rolled back.
    """
    async with db.driver_transaction() as tx:
        if tx.sqlite is not None:
            return _sqlite_spend(tx.sqlite, charge)
        connection = tx.postgres
        assert connection is not None
        return await _postgres_spend(lambda sql, args: connection.fetchrow(sql, *args), charge)


async def spend(session: AsyncSession, charge: Charge) -> Spent | None:
    """Charge a personal account in the session's transaction, or return None for the general path."""
    connection = await session.connection()
    if connection.dialect.name == "sqlite":
        sqlite_conn = await driver_sqlite_connection(connection)
        return _sqlite_spend(sqlite_conn, charge)
    # Through SQLAlchemy's driver call, not asyncpg directly: the adapter opens the
    # session's transaction lazily, on its first statement.

    async def fetchrow(sql: str, args: tuple[Any, ...]) -> Any:
        return (await connection.exec_driver_sql(sql, args)).first()

    return await _postgres_spend(fetchrow, charge)
