"""A charge in a transaction of its own (``charge_alone``): the hot path and its way back to the general one.

The hot path writes on the bare driver connection, outside SQLAlchemy; these tests hold it
to the same rules as ``charge``: the same rows, the same errors, nothing written on a refusal,
one charge per idempotency key, a due reset applied first.
"""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from devops_agent.billing import credits
from devops_agent.billing.errors import AccountNotFound, InsufficientCredits, InvalidAmount
from devops_agent.billing.models import CreditLedger, LedgerKind, UsageLog
from devops_agent.db import Database
from tests.factories import T0, make_user


async def _counts(db: Database) -> tuple[int, int]:
    async with db.transaction() as s:
        logs = await s.scalar(select(func.count()).select_from(UsageLog))
        rows = await s.scalar(select(func.count()).select_from(CreditLedger))
    return int(logs or 0), int(rows or 0)


async def test_writes_the_same_rows_as_a_charge_in_a_session(db: Database) -> None:
    async with db.transaction() as s:
        user = await make_user(s)
        p = await credits.create_purchase(s, user_id=user.id, credits_amount=100, price_paid=Decimal("10"), now=T0)
        await credits.grant_purchase(s, purchase_id=p.id, now=T0)
    result = await credits.charge_alone(
        db, user_id=user.id, amount=25, action_type="tool_use", tool_name="create_ec2_instance", now=T0
    )
    assert (result.balance.monthly, result.balance.purchased, result.credits_used) == (0, 95, 25)
    assert not result.replayed
    async with db.transaction() as s:
        row = await s.get(CreditLedger, result.ledger_id)
        log = await s.get(UsageLog, result.usage_log_id)
        sub = await credits.get_account(s, user_id=user.id, now=T0)
        sums = await credits.ledger_sums(s, subscription_id=sub.id)
    assert row is not None
    assert log is not None
    assert (row.kind, row.monthly_delta, row.purchased_delta, row.usage_log_id) == (
        LedgerKind.CHARGE,
        -20,
        -5,
        log.id,
    )
    assert (row.monthly_balance_after, row.purchased_balance_after) == (0, 95)
    assert (log.action_type, log.tool_name, log.credits_used, log.success) == (
        "tool_use",
        "create_ec2_instance",
        25,
        True,
    )
    assert log.created_at == T0
    assert (sub.credits_used_this_month, sub.total_credits_used) == (25, 25)
    assert (sums.monthly, sums.purchased) == (sub.credits_remaining, sub.purchased_credits_remaining)


async def test_retry_with_same_key_replays_and_changes_nothing(db: Database) -> None:
    async with db.transaction() as s:
        user = await make_user(s)
    first = await credits.charge_alone(
        db, user_id=user.id, amount=5, action_type="tool_use", now=T0, idempotency_key="run-1:tool:1"
    )
    again = await credits.charge_alone(
        db, user_id=user.id, amount=5, action_type="tool_use", now=T0, idempotency_key="run-1:tool:1"
    )
    assert again.replayed
    assert not first.replayed
    assert (again.usage_log_id, again.ledger_id, again.balance) == (first.usage_log_id, first.ledger_id, first.balance)
    assert await _counts(db) == (1, 2)  # one usage log; the opening grant and one charge
    async with db.transaction() as s:
        assert (await credits.get_account(s, user_id=user.id, now=T0)).balance == 15


async def test_short_balance_raises_and_writes_nothing(db: Database) -> None:
    async with db.transaction() as s:
        user = await make_user(s)
    before = await _counts(db)
    with pytest.raises(InsufficientCredits) as err:
        await credits.charge_alone(db, user_id=user.id, amount=21, action_type="tool_use", now=T0)
    assert (err.value.balance, err.value.required) == (20, 21)
    assert await _counts(db) == before
    with pytest.raises(InvalidAmount):
        await credits.charge_alone(db, user_id=user.id, amount=0, action_type="tool_use", now=T0)


async def test_no_account_is_an_error(db: Database) -> None:
    with pytest.raises(AccountNotFound):
        await credits.charge_alone(db, user_id=424242, amount=1, action_type="agent_message", now=T0)


async def test_a_due_reset_is_applied_before_the_charge(db: Database) -> None:
    async with db.transaction() as s:
        user = await make_user(s)
    await credits.charge_alone(db, user_id=user.id, amount=7, action_type="agent_message", now=T0)
    later = T0 + timedelta(days=40)  # one period has ended
    result = await credits.charge_alone(db, user_id=user.id, amount=1, action_type="agent_message", now=later)
    assert result.balance.monthly == 19  # the new month's 20, less this charge
    async with db.transaction() as s:
        sub = await credits.get_account(s, user_id=user.id, now=later)
        kinds = (
            await s.scalars(
                select(CreditLedger.kind).where(CreditLedger.subscription_id == sub.id).order_by(CreditLedger.id)
            )
        ).all()
    assert kinds[-3:] == [LedgerKind.EXPIRY, LedgerKind.MONTHLY_GRANT, LedgerKind.CHARGE]
    assert sub.credits_used_this_month == 1


async def test_a_refused_row_rolls_back_and_the_next_charge_works(db: Database) -> None:
    """A constraint violation on the driver connection leaves no half-written charge behind."""
    async with db.transaction() as s:
        user = await make_user(s)
    before = await _counts(db)
    with pytest.raises((IntegrityError, sqlite3.IntegrityError)):  # SQLite's hot path raises the driver's
        await credits.charge_alone(
            db, user_id=user.id, amount=1, action_type="agent_message", conversation_id=987654, now=T0
        )
    assert await _counts(db) == before
    result = await credits.charge_alone(db, user_id=user.id, amount=1, action_type="agent_message", now=T0)
    assert result.balance.total == 19


async def test_refused_inside_an_open_transaction(db: Database) -> None:
    """It would wait forever for the caller's own lock; it says so instead."""
    async with db.transaction() as s:
        user = await make_user(s)
    async with db.transaction():
        with pytest.raises(RuntimeError, match="inside Database.transaction"):
            await credits.charge_alone(db, user_id=user.id, amount=1, action_type="agent_message", now=T0)
