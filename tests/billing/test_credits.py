"""Engine rules one at a time: spending order, idempotency, refunds, claw-backs, adjustments."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import func, select

from devops_agent import billing
from devops_agent.billing.errors import (
    AlreadyOnTier,
    ChargeNotFound,
    InsufficientCredits,
    InvalidAmount,
    TierNotFound,
)
from devops_agent.billing.models import CreditLedger, CreditPurchase, LedgerKind, PurchaseStatus, UsageLog
from devops_agent.db import Database
from tests.factories import T0, make_user


async def test_insufficient_credits_changes_nothing(db: Database) -> None:
    async with db.transaction() as s:
        user = await make_user(s)
    async with db.transaction() as s:
        with pytest.raises(InsufficientCredits) as err:
            await billing.charge(s, user_id=user.id, amount=21, action_type="tool_use", now=T0)
    assert (err.value.balance, err.value.required) == (20, 21)
    async with db.transaction() as s:
        sub = await billing.get_account(s, user_id=user.id, now=T0)
        assert sub.balance == 20
        assert await s.scalar(select(func.count()).select_from(UsageLog)) == 0


async def test_charge_spans_monthly_and_purchased(db: Database) -> None:
    async with db.transaction() as s:
        user = await make_user(s)
        p = await billing.create_purchase(s, user_id=user.id, credits_amount=100, price_paid=Decimal("10"), now=T0)
        await billing.grant_purchase(s, purchase_id=p.id, now=T0)
        result = await billing.charge(s, user_id=user.id, amount=25, action_type="tool_use", now=T0)
        assert (result.balance.monthly, result.balance.purchased) == (0, 95)
        rows = (
            await s.execute(
                select(CreditLedger).where(CreditLedger.usage_log_id == result.usage_log_id).order_by(CreditLedger.id)
            )
        ).scalars()
        # One ledger row per grant the charge drew from, the plan's first, each with the balances after it.
        assert [(r.monthly_delta, r.purchased_delta, r.monthly_balance_after, r.purchased_balance_after) for r in rows] == [
            (-20, 0, 0, 100),
            (0, -5, 0, 95),
        ]


async def test_retry_with_same_key_returns_first_result(db: Database) -> None:
    async with db.transaction() as s:
        user = await make_user(s)
        first = await billing.charge(
            s, user_id=user.id, amount=2, action_type="agent_message", now=T0, idempotency_key="k"
        )
    async with db.transaction() as s:
        again = await billing.charge(
            s, user_id=user.id, amount=2, action_type="agent_message", now=T0, idempotency_key="k"
        )
        other = await make_user(s)
        theirs = await billing.charge(
            s, user_id=other.id, amount=1, action_type="agent_message", now=T0, idempotency_key="k"
        )
    assert again.replayed
    assert not first.replayed
    assert (again.usage_log_id, again.balance) == (first.usage_log_id, first.balance)
    assert not theirs.replayed  # keys are per user


async def test_refund_returns_credits_once_and_marks_the_log(db: Database) -> None:
    async with db.transaction() as s:
        user = await make_user(s)
        charged = await billing.charge(s, user_id=user.id, amount=3, action_type="agent_message", now=T0)
    async with db.transaction() as s:
        first = await billing.refund(s, usage_log_id=charged.usage_log_id, now=T0, error_message="LLM timeout")
        second = await billing.refund(s, usage_log_id=charged.usage_log_id, now=T0, error_message="LLM timeout")
        assert first.balance.total == 20
        assert second.replayed
        log = await s.get(UsageLog, charged.usage_log_id)
        assert log is not None
        assert not log.success
        assert log.error_message == "LLM timeout"
        sub = await billing.get_account(s, user_id=user.id, now=T0)
        assert sub.credits_used_this_month == 0
        with pytest.raises(ChargeNotFound):
            await billing.refund(s, usage_log_id=9999, now=T0)


async def test_clawback_never_goes_below_zero_and_records_shortfall(db: Database) -> None:
    async with db.transaction() as s:
        user = await make_user(s)
        p = await billing.create_purchase(s, user_id=user.id, credits_amount=100, price_paid=Decimal("10"), now=T0)
        await billing.grant_purchase(s, purchase_id=p.id, now=T0)
        await billing.charge(s, user_id=user.id, amount=60, action_type="tool_use", now=T0)
    async with db.transaction() as s:
        result = await billing.claw_back_purchase(s, purchase_id=p.id, now=T0, reason="charge.refunded")
        again = await billing.claw_back_purchase(s, purchase_id=p.id, now=T0, reason="charge.refunded")
        assert again.replayed
        assert (result.balance.monthly, result.balance.purchased) == (0, 0)
        stored = await s.get(CreditPurchase, p.id)
        assert stored is not None
        assert stored.payment_status == PurchaseStatus.REFUNDED
        assert stored.clawback_shortfall == 40  # 20 monthly + 40 purchased were spent


async def test_adjustments_need_a_reason_and_never_overdraw(db: Database) -> None:
    async with db.transaction() as s:
        user = await make_user(s)
        admin = await make_user(s, is_admin=True)
        with pytest.raises(InvalidAmount):
            await billing.adjust(s, user_id=user.id, amount=5, reason="  ", admin_id=admin.id, now=T0)
        with pytest.raises(InsufficientCredits):
            await billing.adjust(s, user_id=user.id, amount=-21, reason="abuse", admin_id=admin.id, now=T0)
        given = await billing.adjust(s, user_id=user.id, amount=10, reason="outage credit", admin_id=admin.id, now=T0)
        assert (given.balance.monthly, given.balance.purchased) == (20, 10)
        row = await s.get(CreditLedger, given.ledger_id)
        assert row is not None
        assert (row.kind, row.admin_id, row.reason) == (LedgerKind.ADJUSTMENT, admin.id, "outage credit")


async def test_tier_errors(db: Database) -> None:
    async with db.transaction() as s:
        user = await make_user(s)
        free = await billing.tier_by_name(s, "free")
        with pytest.raises(AlreadyOnTier):
            await billing.change_tier(s, user_id=user.id, tier_id=free.id, now=T0)
        with pytest.raises(TierNotFound):
            await billing.change_tier(s, user_id=user.id, tier_id=999, now=T0)
        with pytest.raises(AlreadyOnTier):
            await billing.cancel(s, user_id=user.id, now=T0)


async def test_database_refuses_a_negative_balance(db: Database) -> None:
    """The CHECK constraints hold even against code that bypasses the engine."""
    from sqlalchemy import update
    from sqlalchemy.exc import IntegrityError

    from devops_agent.billing.models import UserSubscription

    async with db.transaction() as s:
        user = await make_user(s)
    with pytest.raises(IntegrityError):
        async with db.transaction() as s:
            await s.execute(
                update(UserSubscription).where(UserSubscription.user_id == user.id).values(credits_remaining=-1)
            )
