"""Charges under real concurrency: each task on its own connection, committing for real."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import func, select

from devops_agent import billing
from devops_agent.billing.books import check_books
from devops_agent.billing.errors import InsufficientCredits
from devops_agent.billing.models import CreditLedger, LedgerKind, UsageLog
from devops_agent.db import Database
from tests.factories import T0, gather_all, make_user


async def _charge_once(db: Database, user_id: int, key: str | None = None) -> bool:
    """One charge in a transaction of its own, as the agent charges a message or a tool call."""
    try:
        async with db.transaction() as s:
            await billing.charge(s, user_id=user_id, amount=1, action_type="agent_message", now=T0, idempotency_key=key)
    except InsufficientCredits:
        return False
    return True


async def test_fifty_concurrent_charges_on_twenty_credits(db: Database) -> None:
    async with db.transaction() as s:
        user = await make_user(s)
    outcomes = await gather_all(*(_charge_once(db, user.id) for _ in range(50)))
    assert outcomes.count(True) == 20
    assert outcomes.count(False) == 30
    async with db.transaction() as s:
        sub = await billing.get_account(s, user_id=user.id, now=T0)
        assert sub.balance == 0
        assert sub.credits_used_this_month == 20
        logs = await s.scalar(select(func.count()).select_from(UsageLog).where(UsageLog.user_id == user.id))
        assert logs == 20
        sums = await billing.ledger_sums(s, subscription_id=sub.id)
        assert sums.total == 0


async def test_concurrent_retries_with_one_key_charge_once(db: Database) -> None:
    async with db.transaction() as s:
        user = await make_user(s)
    outcomes = await gather_all(*(_charge_once(db, user.id, key="msg-1") for _ in range(10)))
    assert all(outcomes)
    async with db.transaction() as s:
        sub = await billing.get_account(s, user_id=user.id, now=T0)
        assert sub.balance == 19
        charges = await s.scalar(
            select(func.count()).select_from(CreditLedger).where(CreditLedger.kind == LedgerKind.CHARGE)
        )
        assert charges == 1


async def test_concurrent_grants_of_one_purchase_grant_once(db: Database) -> None:
    async with db.transaction() as s:
        user = await make_user(s)
        purchase = await billing.create_purchase(
            s, user_id=user.id, credits_amount=250, price_paid=Decimal("20"), now=T0
        )

    async def grant() -> None:
        async with db.transaction() as s:
            await billing.grant_purchase(s, purchase_id=purchase.id, now=T0)

    await gather_all(*(grant() for _ in range(20)))
    async with db.transaction() as s:
        sub = await billing.get_account(s, user_id=user.id, now=T0)
        assert sub.purchased_credits_remaining == 250


async def test_spending_and_granting_at_once_loses_nothing(db: Database) -> None:
    """Charges racing with purchases and adjustments: the ledger still explains every credit."""
    async with db.transaction() as s:
        user = await make_user(s)
        purchases = [
            await billing.create_purchase(s, user_id=user.id, credits_amount=100, price_paid=Decimal("10"), now=T0)
            for _ in range(3)
        ]

    async def grant(purchase_id: int) -> None:
        async with db.transaction() as s:
            await billing.grant_purchase(s, purchase_id=purchase_id, now=T0)

    async def give(n: int) -> None:
        async with db.transaction() as s:
            await billing.adjust(s, user_id=user.id, amount=n, reason="goodwill", admin_id=None, now=T0)

    tasks = [_charge_once(db, user.id) for _ in range(400)]
    tasks += [grant(p.id) for p in purchases]
    tasks += [give(5) for _ in range(4)]
    results = await gather_all(*tasks)
    spent = sum(1 for r in results[:400] if r)
    async with db.transaction() as s:
        sub = await billing.get_account(s, user_id=user.id, now=T0)
        sums = await billing.ledger_sums(s, subscription_id=sub.id)
        assert sums == billing.Balance.of(sub)
        assert sub.balance == 20 + 300 + 20 - spent
        assert sub.credits_used_this_month == spent


async def test_concurrent_charges_crossing_from_grant_to_grant_keep_every_grant_exact(db: Database) -> None:
    """Charges that wait on the account's lock read its grants as they are once they hold it.

    On PostgreSQL a statement that waits for a row lock re-reads only the locked row: grants
    read by the same statement would be as they were before the wait, and a charge would
    take credits from a grant that another charge had just emptied.
    """
    async with db.transaction() as s:
        user = await make_user(s)  # 20 plan credits
        for credits in (10, 100):
            pack = await billing.create_purchase(
                s, user_id=user.id, credits_amount=credits, price_paid=Decimal(credits), now=T0
            )
            await billing.grant_purchase(s, purchase_id=pack.id, now=T0)
    outcomes = await gather_all(*(_charge_once(db, user.id) for _ in range(60)))
    assert outcomes.count(True) == 60  # 130 credits: no charge is refused
    report = await check_books(db, clock=lambda: T0)
    assert report.ok, [d.detail for c in report.checks for d in c.examples]
    async with db.transaction() as s:
        sub = await billing.get_account(s, user_id=user.id, now=T0)
        assert (sub.credits_remaining, sub.purchased_credits_remaining) == (0, 70)
