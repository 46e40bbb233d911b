"""Property test of credit grants: whatever the sequence of grants, packs, adjustments,
charges, refunds and clock advances on one account, the grants and the books agree.

After every step: no balance or grant below zero; the account's three sums equal its
grants' remaining by category and the ledger's sums; each grant's ledger rows sum to
its remaining; grants past their expiry have nothing left. Each charge is checked
against the draw-down order recomputed here, independently of ``grants.draw_key``, from
the grants as they were before it; each refund gives back only what went to grants
still in force (an expired grant's credits are never revived). At the end the books
audit (``billing.books``) passes too.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from devops_agent import billing
from devops_agent.billing import books
from devops_agent.billing.accounts import lock_account
from devops_agent.billing.adjustments import grant_promotional
from devops_agent.billing.errors import AlreadyOnTier, InsufficientCredits
from devops_agent.billing.grants import add_grant
from devops_agent.billing.models import CreditGrant, CreditLedger, GrantCategory, LedgerKind, SubscriptionTier
from devops_agent.db import Database
from tests.factories import T0, make_user

expiry = st.one_of(st.none(), st.integers(1, 24 * 45))  # hours from now, or never
priority = st.sampled_from([10, 50, 50, 90])
operation = st.one_of(
    st.tuples(st.just("promotional"), st.integers(1, 40), priority, expiry),
    st.tuples(st.just("paid"), st.integers(1, 40), priority, expiry),  # a pack with a priority and an expiry
    st.tuples(st.just("pack"), st.integers(1, 60)),
    st.tuples(st.just("adjust"), st.integers(-40, 40).filter(bool)),
    st.tuples(st.just("charge"), st.integers(1, 60)),
    st.tuples(st.just("charge"), st.integers(1, 15)),
    st.tuples(st.just("refund"), st.integers(0, 100)),
    st.tuples(st.just("advance"), st.integers(1, 24 * 40)),  # hours: crosses expiries and period ends
    st.tuples(st.just("clawback"), st.integers(0, 100)),  # a pack refunded by the payment provider
    st.tuples(st.just("tier"), st.sampled_from(["free", "starter", "professional"])),
)
_RANK = {"promotional": 0, "plan": 1, "paid": 2}


@dataclass(frozen=True)
class G:
    """A grant as it was at one moment."""

    id: int
    category: str
    credits: int
    remaining: int
    priority: int
    effective_at: datetime
    expires_at: datetime | None

    def in_force(self, now: datetime) -> bool:
        return self.effective_at <= now and (self.expires_at is None or self.expires_at > now)


def expected_draw(grants: list[G], amount: int, now: datetime) -> list[tuple[int, int]] | None:
    """The (grant, credits) a charge of ``amount`` should take, in order; None when short.

    The issue's rule, written out again: priority, soonest expiry (never last),
    promotional before plan before paid, oldest first.
    """
    usable = [g for g in grants if g.remaining > 0 and g.in_force(now)]
    usable.sort(
        key=lambda g: (
            g.priority,
            g.expires_at is None,
            g.expires_at or now,
            _RANK[g.category],
            g.effective_at,
            g.id,
        )
    )
    taken, left = [], amount
    for g in usable:
        if left == 0:
            break
        take = min(left, g.remaining)
        taken.append((g.id, take))
        left -= take
    return taken if left == 0 else None


async def grants_now(session: AsyncSession, account_id: int) -> dict[int, G]:
    rows = (
        await session.execute(
            select(CreditGrant)
            .where(CreditGrant.subscription_id == account_id)
            .execution_options(populate_existing=True)
        )
    ).scalars()
    return {g.id: G(g.id, g.category, g.credits, g.remaining, g.priority, g.effective_at, g.expires_at) for g in rows}


async def check_account(session: AsyncSession, user_id: int, now: datetime) -> tuple[int, dict[int, G]]:
    """Settle the account at ``now`` and check every invariant; return its id and grants."""
    sub = await billing.get_account(session, user_id=user_id, now=now)
    balance = billing.Balance.of(sub)
    assert min(balance.monthly, balance.purchased, balance.promotional) >= 0
    grants = await grants_now(session, sub.id)
    sums = {c.value: 0 for c in GrantCategory}
    for g in grants.values():
        assert 0 <= g.remaining <= g.credits, g
        sums[g.category] += g.remaining
        if g.expires_at is not None and g.expires_at <= now:
            assert g.remaining == 0, f"grant {g.id} expired at {g.expires_at} still has {g.remaining} at {now}"
    assert (sums["plan"], sums["paid"], sums["promotional"]) == (
        balance.monthly,
        balance.purchased,
        balance.promotional,
    )
    assert await billing.ledger_sums(session, subscription_id=sub.id) == balance
    moved = CreditLedger.monthly_delta + CreditLedger.purchased_delta + CreditLedger.promotional_delta
    rows = await session.execute(
        select(CreditLedger.grant_id, func.sum(moved), func.count())
        .where(CreditLedger.subscription_id == sub.id, moved != 0)
        .group_by(CreditLedger.grant_id)
    )
    per_grant = {grant_id: int(total) for grant_id, total, _ in rows}
    # Every row that moved credits names its grant (a claw-back of a spent pack moves none and names none).
    assert None not in per_grant
    assert per_grant == {g.id: g.remaining for g in grants.values() if g.id in per_grant or g.remaining}
    return sub.id, grants


async def _charge_rows(session: AsyncSession, usage_log_id: int) -> list[CreditLedger]:
    return list(
        (
            await session.execute(
                select(CreditLedger)
                .where(CreditLedger.usage_log_id == usage_log_id, CreditLedger.kind == LedgerKind.CHARGE.value)
                .order_by(CreditLedger.id)
            )
        ).scalars()
    )


async def play(db: Database, ops: list[tuple[Any, ...]]) -> None:
    """Run ``ops`` on a fresh user's account, checking the books after each."""
    now = T0
    async with db.transaction() as s:
        user = await make_user(s, now=now)
    async with db.transaction() as s:
        account_id, grants = await check_account(s, user.id, now)
    charges: list[int] = []
    packs: list[int] = []
    async with db.transaction() as s:
        tiers = {t.name: t.id for t in (await s.execute(select(SubscriptionTier))).scalars()}
    for op, *args in ops:
        async with db.transaction() as s:
            if op == "promotional":
                credits, prio, hours = args
                granted = await grant_promotional(
                    s,
                    user_id=user.id,
                    credits=credits,
                    reason="property test",
                    admin_id=None,
                    now=now,
                    expires_at=now + timedelta(hours=hours) if hours else None,
                )
                granted.priority = prio  # grant_promotional gives the default priority; admins may set another
                await s.flush()
            elif op == "paid":
                credits, prio, hours = args
                sub = await lock_account(s, user_id=user.id)
                await add_grant(
                    s,
                    sub,
                    category=GrantCategory.PAID,
                    credits=credits,
                    now=now,
                    kind=LedgerKind.PURCHASE,
                    key=billing.new_key(),
                    source="property test",
                    user_id=user.id,
                    expires_at=now + timedelta(hours=hours) if hours else None,
                    priority=prio,
                    price=Decimal(credits) / 10,
                )
            elif op == "pack":
                (credits,) = args
                p = await billing.create_purchase(
                    s, user_id=user.id, credits_amount=credits, price_paid=Decimal(credits) / 10, now=now
                )
                await billing.grant_purchase(s, purchase_id=p.id, now=now)
                packs.append(p.id)
            elif op == "clawback" and packs:
                purchase_id = packs.pop(args[0] % len(packs))
                await billing.claw_back_purchase(s, purchase_id=purchase_id, now=now, reason="disputed")
            elif op == "tier":
                with contextlib.suppress(AlreadyOnTier):
                    await billing.change_tier(s, user_id=user.id, tier_id=tiers[args[0]], now=now)
            elif op == "adjust":
                (amount,) = args
                try:
                    await billing.adjust(s, user_id=user.id, amount=amount, reason="test", admin_id=None, now=now)
                except InsufficientCredits:
                    assert sum(g.remaining for g in grants.values() if g.in_force(now)) < -amount
            elif op == "charge":
                (amount,) = args
                expected = expected_draw(list(grants.values()), amount, now)
                try:
                    result = await billing.charge(s, user_id=user.id, amount=amount, action_type="tool_use", now=now)
                except InsufficientCredits:
                    assert expected is None, f"refused a charge of {amount} the grants could pay: {expected}"
                else:
                    assert expected is not None, f"charged {amount} though the grants held less"
                    rows = await _charge_rows(s, result.usage_log_id)
                    assert [(r.grant_id, -r.delta) for r in rows] == expected
                    for r in rows:  # each row moves the grant's own category
                        category = grants[r.grant_id or 0].category
                        assert r.delta == {"plan": r.monthly_delta, "paid": r.purchased_delta}.get(
                            category, r.promotional_delta
                        )
                    charges.append(result.usage_log_id)
            elif op == "refund" and charges:
                usage_log_id = charges.pop(args[0] % len(charges))
                rows = await _charge_rows(s, usage_log_id)
                total_before = sum(g.remaining for g in grants.values())
                result = await billing.refund(s, usage_log_id=usage_log_id, now=now, error_message="failed")
                # Only the credits of grants still in force come back; an expired grant's stay gone.
                back = {}
                for r in rows:
                    g = grants[r.grant_id or 0]
                    if g.expires_at is None or g.expires_at > now:
                        back[g.id] = back.get(g.id, 0) - r.delta
                assert result.balance.total == total_before + sum(back.values())
                after = await grants_now(s, account_id)
                for g in grants.values():
                    assert after[g.id].remaining == g.remaining + back.get(g.id, 0)
                for new in after.keys() - grants.keys():  # the expired grants' share: on the books, not revived
                    assert after[new].remaining == 0
                    assert after[new].expires_at is not None
                    assert after[new].expires_at <= now
            elif op == "advance":
                now += timedelta(hours=args[0])
        async with db.transaction() as s:
            account_id, grants = await check_account(s, user.id, now)
    report = await books.check_books(db, clock=lambda: now)  # the audit agrees
    assert report.ok, report.first()


# More examples for a deeper search: GRANT_EXAMPLES=500 pytest tests/billing/test_grants_properties.py
@settings(
    max_examples=int(os.environ.get("GRANT_EXAMPLES", "15")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops=st.lists(operation, min_size=1, max_size=20))
async def test_grants_and_books_agree_after_any_sequence(db: Database, ops: list[tuple[Any, ...]]) -> None:
    await play(db, ops)
