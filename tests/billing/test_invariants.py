"""Property test: whatever the sequence of operations, no balance goes negative and
every stored balance equals the sum of its ledger rows."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from devops_agent import billing
from devops_agent.billing.errors import AlreadyOnTier, InsufficientCredits
from devops_agent.billing.models import CreditLedger, SubscriptionTier
from devops_agent.db import Database
from tests.factories import T0, make_user

operation = st.one_of(
    st.tuples(st.just("charge"), st.integers(1, 30)),
    st.tuples(st.just("refund"), st.just(0)),
    st.tuples(st.just("purchase"), st.sampled_from([100, 250, 500, 1000])),
    st.tuples(st.just("advance"), st.integers(1, 75)),
    st.tuples(st.just("tier"), st.sampled_from(["free", "starter", "professional", "business"])),
    st.tuples(st.just("cancel"), st.just(0)),
    st.tuples(st.just("adjust"), st.integers(-40, 40).filter(bool)),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(operation, min_size=1, max_size=25))
async def test_balances_always_match_the_ledger(db: Database, ops: list[tuple[str, int]]) -> None:
    now = T0
    async with db.transaction() as s:
        user = await make_user(s, now=now)
        tiers = {t.name: t.id for t in (await s.execute(select(SubscriptionTier))).scalars()}
    charges: list[int] = []
    for op, arg in ops:
        async with db.transaction() as s:
            try:
                if op == "charge":
                    result = await billing.charge(s, user_id=user.id, amount=arg, action_type="tool_use", now=now)
                    charges.append(result.usage_log_id)
                elif op == "refund" and charges:
                    await billing.refund(s, usage_log_id=charges.pop(), now=now, error_message="failed")
                elif op == "purchase":
                    p = await billing.create_purchase(
                        s, user_id=user.id, credits_amount=arg, price_paid=Decimal(arg) / 10, now=now
                    )
                    await billing.grant_purchase(s, purchase_id=p.id, now=now)
                elif op == "advance":
                    now += timedelta(days=arg)
                elif op == "tier":
                    await billing.change_tier(s, user_id=user.id, tier_id=tiers[arg], now=now)
                elif op == "cancel":
                    await billing.cancel(s, user_id=user.id, now=now)
                elif op == "adjust":
                    await billing.adjust(s, user_id=user.id, amount=arg, reason="test", admin_id=None, now=now)
            except (InsufficientCredits, AlreadyOnTier):
                pass
        async with db.transaction() as s:
            sub = await billing.get_account(s, user_id=user.id, now=now)
            assert sub.credits_remaining >= 0
            assert sub.purchased_credits_remaining >= 0
            sums = await billing.ledger_sums(s, subscription_id=sub.id)
            assert sums == billing.Balance.of(sub)
            last = await s.scalar(
                select(CreditLedger).where(CreditLedger.subscription_id == sub.id).order_by(CreditLedger.id.desc())
            )
            assert last is not None
            assert (last.monthly_balance_after, last.purchased_balance_after) == (
                sub.credits_remaining,
                sub.purchased_credits_remaining,
            )
