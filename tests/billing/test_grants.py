"""Grants one rule at a time: the draw-down order, a ledger row per grant, expiry, refunds that revive nothing."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from devops_agent import billing
from devops_agent.billing.errors import InsufficientCredits, InvalidAmount
from devops_agent.billing.models import CreditGrant, CreditLedger, GrantCategory, LedgerKind
from devops_agent.db import Database
from tests.factories import T0, make_user

DAY = timedelta(days=1)


async def _rows(db: Database, usage_log_id: int) -> list[tuple[str, int, int]]:
    """(kind, grant id, credits) of the ledger rows of one usage log, in order."""
    async with db.transaction() as s:
        rows = await s.execute(
            select(CreditLedger).where(CreditLedger.usage_log_id == usage_log_id).order_by(CreditLedger.id)
        )
        return [(r.kind, int(r.grant_id or 0), r.delta) for r in rows.scalars()]


async def _grants(db: Database, user_id: int) -> dict[str, CreditGrant]:
    """The account's grants by source."""
    async with db.transaction() as s:
        sub = await billing.get_account(s, user_id=user_id, now=T0)
        rows = await s.execute(select(CreditGrant).where(CreditGrant.subscription_id == sub.id))
        return {g.source: g for g in rows.scalars()}


async def _user_with_pack_and_promotion(db: Database, *, promo_expires_in: timedelta | None) -> int:
    """A Free user (20 plan credits until T0 + 1 month) with a 100-credit pack and 10 promotional credits."""
    async with db.transaction() as s:
        user = await make_user(s)
        p = await billing.create_purchase(s, user_id=user.id, credits_amount=100, price_paid=Decimal("10"), now=T0)
        await billing.grant_purchase(s, purchase_id=p.id, now=T0)
        await billing.grant_promotional(
            s,
            user_id=user.id,
            credits=10,
            reason="launch week",
            admin_id=None,
            now=T0,
            expires_at=T0 + promo_expires_in if promo_expires_in else None,
        )
        return user.id


async def test_the_soonest_expiry_is_spent_first_and_a_charge_spanning_grants_writes_a_row_each(db: Database) -> None:
    user_id = await _user_with_pack_and_promotion(db, promo_expires_in=7 * DAY)
    async with db.transaction() as s:
        result = await billing.charge(s, user_id=user_id, amount=35, action_type="tool_use", now=T0 + DAY)
    assert (result.balance.promotional, result.balance.monthly, result.balance.purchased) == (0, 0, 95)
    grants = await _grants(db, user_id)
    promo, plan = grants["admin"], grants["plan:free"]
    pack = next(g for g in grants.values() if g.category == GrantCategory.PAID.value)
    # The promotion (expires in a week) before the plan (a month) before the pack (never).
    assert await _rows(db, result.usage_log_id) == [
        ("charge", promo.id, -10),
        ("charge", plan.id, -20),
        ("charge", pack.id, -5),
    ]


async def test_without_expiry_promotional_credits_go_before_paid_and_after_the_plan(db: Database) -> None:
    user_id = await _user_with_pack_and_promotion(db, promo_expires_in=None)
    async with db.transaction() as s:
        result = await billing.charge(s, user_id=user_id, amount=25, action_type="tool_use", now=T0)
    kinds = [(k, credits) for k, _, credits in await _rows(db, result.usage_log_id)]
    assert kinds == [("charge", -20), ("charge", -5)]  # the plan's 20 (expiring), then the promotion's 5
    assert (result.balance.monthly, result.balance.promotional, result.balance.purchased) == (0, 5, 100)


async def test_a_retried_charge_spanning_grants_answers_the_whole_charge(db: Database) -> None:
    user_id = await _user_with_pack_and_promotion(db, promo_expires_in=None)
    async with db.transaction() as s:
        first = await billing.charge(s, user_id=user_id, amount=25, action_type="tool_use", now=T0, idempotency_key="k")
    async with db.transaction() as s:
        again = await billing.charge(s, user_id=user_id, amount=25, action_type="tool_use", now=T0, idempotency_key="k")
    assert again.replayed
    assert (again.credits_used, again.balance, again.ledger_id) == (
        25,
        first.balance,
        first.ledger_id,
    )


async def test_a_grant_past_its_expiry_gives_up_its_credits_with_an_expiry_row_when_read(db: Database) -> None:
    user_id = await _user_with_pack_and_promotion(db, promo_expires_in=7 * DAY)
    async with db.transaction() as s:
        sub = await billing.get_account(s, user_id=user_id, now=T0 + 8 * DAY)
        assert (sub.promotional_credits_remaining, sub.balance) == (0, 120)
        sums = await billing.ledger_sums(s, subscription_id=sub.id)
        assert sums.promotional == 0
        expiry = (
            await s.execute(select(CreditLedger).where(CreditLedger.kind == LedgerKind.EXPIRY.value))
        ).scalar_one()
        assert (expiry.promotional_delta, expiry.reason) == (-10, "10 promotional credits expired on 2026-01-22")


async def test_a_charge_after_the_expiry_does_not_spend_expired_credits(db: Database) -> None:
    user_id = await _user_with_pack_and_promotion(db, promo_expires_in=7 * DAY)
    async with db.transaction() as s:
        result = await billing.charge(s, user_id=user_id, amount=1, action_type="tool_use", now=T0 + 8 * DAY)
    assert (result.balance.promotional, result.balance.monthly) == (0, 19)


async def test_a_refund_gives_credits_back_to_the_grants_they_came_from(db: Database) -> None:
    user_id = await _user_with_pack_and_promotion(db, promo_expires_in=None)
    async with db.transaction() as s:
        charged = await billing.charge(s, user_id=user_id, amount=25, action_type="tool_use", now=T0)
    async with db.transaction() as s:
        refunded = await billing.refund(s, usage_log_id=charged.usage_log_id, now=T0)
    assert (refunded.balance.monthly, refunded.balance.promotional, refunded.balance.purchased) == (20, 10, 100)
    grants = await _grants(db, user_id)
    assert all(g.remaining == g.credits for g in grants.values())


async def test_a_refund_after_the_grant_expired_does_not_revive_its_credits(db: Database) -> None:
    user_id = await _user_with_pack_and_promotion(db, promo_expires_in=7 * DAY)
    async with db.transaction() as s:
        charged = await billing.charge(s, user_id=user_id, amount=4, action_type="tool_use", now=T0)
    async with db.transaction() as s:  # the promotion ends with 6 left; then the charge is refunded
        refunded = await billing.refund(s, usage_log_id=charged.usage_log_id, now=T0 + 8 * DAY)
        sub = await billing.get_account(s, user_id=user_id, now=T0 + 8 * DAY)
        assert sub.promotional_credits_remaining == 0
        assert refunded.balance.promotional == 0
        sums = await billing.ledger_sums(s, subscription_id=sub.id)
        assert sums.promotional == 0
        fresh = (await s.execute(select(CreditGrant).where(CreditGrant.source.like("refund:grant:%")))).scalar_one()
        # The 4 come back to a grant with the original dates, expired at once: on the books, not spendable.
        assert (fresh.credits, fresh.remaining, fresh.expires_at) == (4, 0, T0 + 7 * DAY)
        kinds = (
            await s.execute(
                select(CreditLedger.kind, CreditLedger.promotional_delta)
                .where(CreditLedger.grant_id == fresh.id)
                .order_by(CreditLedger.id)
            )
        ).all()
        assert [tuple(k) for k in kinds] == [("refund", 4), ("expiry", -4)]


async def test_an_admin_taking_credits_draws_in_order_and_never_below_zero(db: Database) -> None:
    user_id = await _user_with_pack_and_promotion(db, promo_expires_in=None)
    async with db.transaction() as s:
        with pytest.raises(InsufficientCredits):
            await billing.adjust(s, user_id=user_id, amount=-131, reason="too much", admin_id=None, now=T0)
    async with db.transaction() as s:
        taken = await billing.adjust(s, user_id=user_id, amount=-30, reason="abuse", admin_id=None, now=T0)
    assert (taken.balance.monthly, taken.balance.promotional, taken.balance.purchased) == (0, 0, 100)


@pytest.mark.parametrize(
    ("credits", "reason", "expires_in", "message"),
    [
        (0, "outage", None, "1 to"),
        (5, "  ", None, "reason"),
        (5, "outage", -DAY, "future"),
    ],
)
async def test_a_promotional_grant_needs_credits_a_reason_and_a_future_expiry(
    db: Database, credits: int, reason: str, expires_in: timedelta | None, message: str
) -> None:
    async with db.transaction() as s:
        user = await make_user(s)
    async with db.transaction() as s:
        with pytest.raises(InvalidAmount, match=message):
            await billing.grant_promotional(
                s,
                user_id=user.id,
                credits=credits,
                reason=reason,
                admin_id=None,
                now=T0,
                expires_at=T0 + expires_in if expires_in else None,
            )
    grants = await _grants(db, user.id)
    assert [g.category for g in grants.values()] == [GrantCategory.PLAN.value]


async def test_packs_carry_their_price_as_cost_basis_and_the_plan_its_price(db: Database) -> None:
    user_id = await _user_with_pack_and_promotion(db, promo_expires_in=None)
    grants = await _grants(db, user_id)
    pack = next(g for g in grants.values() if g.category == GrantCategory.PAID.value)
    assert (pack.price, pack.cost_basis_per_credit, pack.expires_at) == (Decimal("10.00"), Decimal("0.1"), None)
    assert grants["admin"].cost_basis_per_credit == 0
    assert grants["plan:free"].expires_at == T0.replace(month=2)


async def test_a_refund_after_an_upgrade_does_not_revive_the_old_plans_credits(db: Database) -> None:
    async with db.transaction() as s:
        user = await make_user(s)
        charged = await billing.charge(s, user_id=user.id, amount=5, action_type="tool_use", now=T0)
        starter = await billing.tier_by_name(s, "starter")
        await billing.change_tier(s, user_id=user.id, tier_id=starter.id, now=T0 + DAY)
    async with db.transaction() as s:
        refunded = await billing.refund(s, usage_log_id=charged.usage_log_id, now=T0 + 2 * DAY)
        # The Free plan ended with the upgrade: its 5 credits come back already expired.
        assert refunded.balance.total == 200
        sub = await billing.get_account(s, user_id=user.id, now=T0 + 2 * DAY)
        assert billing.Balance.of(sub) == await billing.ledger_sums(s, subscription_id=sub.id) == refunded.balance
