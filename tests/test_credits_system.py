"""A customer's first month, played end to end on the credits engine (SQLite and PostgreSQL).

New user gets 20 credits -> spends them -> buys 250 -> the monthly reset keeps the 250 ->
upgrades to Starter. Every balance is checked against the ledger at each step.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from devops_agent import billing
from devops_agent.billing.errors import InsufficientCredits
from devops_agent.billing.models import CreditLedger, LedgerKind, UsageLog
from devops_agent.db import Database
from tests.factories import T0, make_user


async def assert_ledger_matches(db: Database, user_id: int) -> None:
    async with db.transaction() as s:
        sub = await billing.get_account(s, user_id=user_id, now=T0)
        sums = await billing.ledger_sums(s, subscription_id=sub.id)
        assert sums == billing.Balance.of(sub)


async def test_seed_story(db: Database) -> None:
    async with db.transaction() as s:
        user = await make_user(s, now=T0)
        sub = await billing.get_account(s, user_id=user.id, now=T0)
        assert sub.tier.name == "free"
        assert (sub.credits_remaining, sub.purchased_credits_remaining) == (20, 0)

    # Spend the month's 20 credits, one message at a time.
    for i in range(20):
        async with db.transaction() as s:
            result = await billing.charge(s, user_id=user.id, amount=1, action_type="agent_message", now=T0)
        assert result.balance.total == 19 - i
    async with db.transaction() as s:
        with pytest.raises(InsufficientCredits) as err:
            await billing.charge(s, user_id=user.id, amount=1, action_type="agent_message", now=T0)
    assert err.value.balance == 0

    # Buy the popular pack: 250 credits for $20.
    async with db.transaction() as s:
        purchase = await billing.create_purchase(
            s, user_id=user.id, credits_amount=250, price_paid=Decimal("20.00"), now=T0
        )
        await billing.grant_purchase(s, purchase_id=purchase.id, now=T0)
    async with db.transaction() as s:
        result = await billing.charge(
            s, user_id=user.id, amount=5, action_type="tool_use", tool_name="create_ec2_instance", now=T0
        )
    assert (result.balance.monthly, result.balance.purchased) == (0, 245)

    # A month later the reset grants 20 monthly credits and keeps the 245 purchased.
    later = T0 + timedelta(days=31)
    async with db.transaction() as s:
        sub = await billing.get_account(s, user_id=user.id, now=later)
        assert (sub.credits_remaining, sub.purchased_credits_remaining) == (20, 245)
        assert sub.credits_used_this_month == 0
        assert sub.total_credits_used == 25
    # Monthly credits are spent first.
    async with db.transaction() as s:
        result = await billing.charge(s, user_id=user.id, amount=1, action_type="agent_message", now=later)
    assert (result.balance.monthly, result.balance.purchased) == (19, 245)

    # Upgrade to Starter: a new period with 200 credits at once, purchased credits kept.
    async with db.transaction() as s:
        starter = await billing.tier_by_name(s, "starter")
        change = await billing.change_tier(s, user_id=user.id, tier_id=starter.id, now=later)
        assert change.effective == "now"
    async with db.transaction() as s:
        sub = await billing.get_account(s, user_id=user.id, now=later)
        assert sub.tier.name == "starter"
        assert (sub.credits_remaining, sub.purchased_credits_remaining) == (200, 245)
        assert sub.current_period_start == later
        logs = (await s.execute(select(func.count()).select_from(UsageLog))).scalar_one()
        assert logs == 22
        kinds = (await s.execute(select(CreditLedger.kind).order_by(CreditLedger.id))).scalars().all()
        assert kinds.count(LedgerKind.CHARGE) == 22
        assert kinds[-2:] == [LedgerKind.TIER_CHANGE, LedgerKind.MONTHLY_GRANT]
    await assert_ledger_matches(db, user.id)
