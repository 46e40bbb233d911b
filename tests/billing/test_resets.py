"""Monthly resets: expiry of unused monthly credits, grants, catch-up, scheduled changes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select, update
from typer.testing import CliRunner

from devops_agent import billing
from devops_agent.billing.accounts import due_grant_accounts
from devops_agent.billing.adjustments import grant_promotional
from devops_agent.billing.models import CreditLedger, LedgerKind, UserSubscription
from devops_agent.billing.periods import utcnow
from devops_agent.cli import app
from devops_agent.db import Database
from tests.factories import make_user


def d(y: int, m: int, day: int, h: int = 12) -> datetime:
    return datetime(y, m, day, h, tzinfo=UTC)


async def _kinds(db: Database, sub_id: int) -> list[tuple[str, int, int]]:
    async with db.transaction() as s:
        rows = await s.execute(
            select(CreditLedger.kind, CreditLedger.monthly_delta, CreditLedger.purchased_delta)
            .where(CreditLedger.subscription_id == sub_id)
            .order_by(CreditLedger.id)
        )
        return [(str(k), int(m), int(p)) for k, m, p in rows.all()]


async def test_reset_at_month_end_keeps_purchased_credits(db: Database) -> None:
    opened = d(2026, 1, 31)
    async with db.transaction() as s:
        user = await make_user(s, now=opened)
        p = await billing.create_purchase(s, user_id=user.id, credits_amount=100, price_paid=Decimal("10"), now=opened)
        await billing.grant_purchase(s, purchase_id=p.id, now=opened)
        await billing.charge(s, user_id=user.id, amount=3, action_type="agent_message", now=opened)
    async with db.transaction() as s:
        sub = await billing.get_account(s, user_id=user.id, now=d(2026, 2, 28, 11))
        assert sub.current_period_end == d(2026, 2, 28)
        assert sub.credits_remaining == 17
        sub = await billing.get_account(s, user_id=user.id, now=d(2026, 2, 28, 12))
        assert (sub.current_period_start, sub.current_period_end) == (d(2026, 2, 28), d(2026, 3, 31))
        assert (sub.credits_remaining, sub.purchased_credits_remaining, sub.credits_used_this_month) == (20, 100, 0)
        assert sub.total_credits_used == 3
    kinds = await _kinds(db, sub.id)
    assert kinds[-2:] == [(LedgerKind.EXPIRY, -17, 0), (LedgerKind.MONTHLY_GRANT, 20, 0)]


async def test_several_missed_months_catch_up_at_once(db: Database) -> None:
    async with db.transaction() as s:
        user = await make_user(s, now=d(2026, 1, 10))
    async with db.transaction() as s:
        sub = await billing.get_account(s, user_id=user.id, now=d(2026, 5, 20))
        assert (sub.current_period_start, sub.current_period_end) == (d(2026, 5, 10), d(2026, 6, 10))
        assert sub.credits_remaining == 20
    kinds = await _kinds(db, sub.id)
    assert [k for k, _, _ in kinds] == [LedgerKind.MONTHLY_GRANT, LedgerKind.EXPIRY, LedgerKind.MONTHLY_GRANT]


async def test_charge_after_period_end_resets_first(db: Database) -> None:
    async with db.transaction() as s:
        user = await make_user(s, now=d(2026, 1, 10))
        for _ in range(20):
            await billing.charge(s, user_id=user.id, amount=1, action_type="agent_message", now=d(2026, 1, 11))
    async with db.transaction() as s:
        result = await billing.charge(s, user_id=user.id, amount=1, action_type="agent_message", now=d(2026, 2, 10))
    assert result.balance.monthly == 19


async def test_downgrade_and_cancel_take_effect_at_period_end(db: Database) -> None:
    t0 = d(2026, 3, 1)
    async with db.transaction() as s:
        user = await make_user(s, now=t0)
        business = await billing.tier_by_name(s, "business")
        starter = await billing.tier_by_name(s, "starter")
        await billing.change_tier(s, user_id=user.id, tier_id=business.id, now=t0)
    async with db.transaction() as s:
        change = await billing.change_tier(s, user_id=user.id, tier_id=starter.id, now=t0 + timedelta(days=3))
        assert change.effective == "period_end"
        sub = await billing.get_account(s, user_id=user.id, now=t0 + timedelta(days=3))
        assert sub.tier.name == "business"
        assert sub.scheduled_tier is not None
        assert sub.scheduled_tier.name == "starter"
        assert sub.credits_remaining == 3000
    async with db.transaction() as s:
        sub = await billing.get_account(s, user_id=user.id, now=d(2026, 4, 1))
        assert sub.tier.name == "starter"
        assert sub.scheduled_tier is None
        assert sub.credits_remaining == 200
        await billing.cancel(s, user_id=user.id, now=d(2026, 4, 2))
    async with db.transaction() as s:
        sub = await billing.get_account(s, user_id=user.id, now=d(2026, 4, 20))
        assert sub.tier.name == "starter"
        assert sub.cancel_at_period_end
        sub = await billing.get_account(s, user_id=user.id, now=d(2026, 5, 1))
        assert sub.tier.name == "free"
        assert not sub.cancel_at_period_end
        assert sub.credits_remaining == 20


async def test_reset_due_command_resets_every_due_account(db: Database) -> None:
    async with db.transaction() as s:
        users = [await make_user(s, now=d(2026, 1, 5)) for _ in range(3)]
        fresh = await make_user(s, now=d(2026, 2, 20))
    async with db.transaction() as s:
        due = await billing.due_account_user_ids(s, now=d(2026, 2, 21))
    assert sorted(due) == sorted(u.id for u in users)
    assert fresh.id not in due
    for user_id in due:
        async with db.transaction() as s:
            assert await billing.apply_due_reset(s, user_id=user_id, now=d(2026, 2, 21))
    async with db.transaction() as s:
        assert await billing.due_account_user_ids(s, now=d(2026, 2, 21)) == []
        assert not await billing.apply_due_reset(s, user_id=users[0].id, now=d(2026, 2, 21))


@pytest.mark.usefixtures("env")
async def test_reset_due_expires_grants_past_their_expiry_on_accounts_nobody_read(db: Database) -> None:
    now = utcnow()
    opened = now - timedelta(days=3)
    async with db.transaction() as s:
        user = await make_user(s, now=opened)
        promo = await grant_promotional(
            s, user_id=user.id, credits=15, reason="launch week", admin_id=None, now=opened,
            expires_at=opened + timedelta(days=1),
        )  # fmt: skip
        # A provider-paid account whose period ended: its plan's grant waits for the paid invoice.
        paying = await make_user(s, now=now - timedelta(days=40))
        await s.execute(
            update(UserSubscription).where(UserSubscription.user_id == paying.id).values(stripe_subscription_id="sub_1")
        )
    async with db.transaction() as s:  # the waiting plan grant is not the job's: it would be found on every run
        assert await due_grant_accounts(s, now=now) == [(user.id, None)]
    result = await asyncio.to_thread(CliRunner().invoke, app, ["reset-due"])
    assert result.exit_code == 0, result.output
    assert "Reset 0 account(s)." in result.output
    assert "Expired grants on 1 account(s)." in result.output
    async with db.transaction() as s:  # read as stored: get_account would settle the account itself
        sub = (await s.execute(select(UserSubscription).where(UserSubscription.user_id == user.id))).scalar_one()
        assert (sub.credits_remaining, sub.promotional_credits_remaining) == (20, 0)
        expiry = (
            (await s.execute(select(CreditLedger).where(CreditLedger.grant_id == promo.id).order_by(CreditLedger.id)))
            .scalars()
            .all()[-1]
        )
        assert (expiry.kind, expiry.promotional_delta, expiry.promotional_balance_after) == (LedgerKind.EXPIRY, -15, 0)
        kept = (await s.execute(select(UserSubscription).where(UserSubscription.user_id == paying.id))).scalar_one()
        assert kept.credits_remaining == 20
