"""Migration 0014 (credit grants) on books the engine of before grants kept: no credit lost or gained.

An old database (revision 0008) is filled with raw SQL, upgraded to the heads and
checked: balances unchanged and equal to their grants and ledger sums, paid grants
priced at the weighted cost basis of the account's completed purchases, plan grants
carrying the period and the tier's price, the audit passing and the app charging the
plan first. The downgrade keeps every credit too (promotional ones become purchased).
On SQLite and on a PostgreSQL database of the test's own.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from devops_agent import billing
from devops_agent.billing import books
from devops_agent.billing.accounts import active_grants
from devops_agent.billing.adjustments import grant_promotional
from devops_agent.billing.catalog import load_catalog
from devops_agent.billing.catalog_sync import sync_catalog
from devops_agent.billing.models import CreditGrant, CreditLedger, UserSubscription
from devops_agent.db import Database
from tests.old_books import OldBooks, migrate, scratch_database

START = datetime(2026, 1, 10, tzinfo=UTC)
END = datetime(2026, 2, 10, tzinfo=UTC)
NOW = datetime(2026, 1, 15, 12, tzinfo=UTC)

backends = pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])


@dataclass(frozen=True)
class Old:
    """The accounts of the old books and their balances (monthly, purchased)."""

    alice: int  # Starter, two packs bought and one refunded: 150 + 300
    bob: int  # Free, credits an admin gave (no purchase): 12 + 40
    carol: int  # Starter, an adjustment left more than the tier's credits: 250 + 0
    team: int  # an organization's pool, a pack bought by alice for it: 20 + 800
    starter: int
    balances: dict[int, tuple[int, int]]


async def _fill(db: Database) -> Old:
    """Revision 0008 and the books of a few customers, as the old engine wrote them."""
    await migrate(db, "0008")
    async with db.engine.connect() as conn:
        old = OldBooks(conn)
        free = await old.tier("free", price="0.00", credits=20)
        starter = await old.tier("starter", price="19.00", credits=200)
        a, b, c, owner = [await old.user(n, now=START) for n in ("alice", "bob", "carol", "owner")]
        org = await old.organization("team", owner=owner, now=START)

        alice = await old.account(user_id=a, tier_id=starter, monthly=150, purchased=300, start=START, end=END)
        await old.ledger(
            account=alice, user_id=a, kind="monthly_grant", monthly=200, purchased=0, after=(200, 0), now=START
        )
        p1 = await old.purchase(user_id=a, credits=100, price="10.00", status="completed", now=START)
        p2 = await old.purchase(user_id=a, credits=500, price="40.00", status="completed", now=START)
        p3 = await old.purchase(user_id=a, credits=250, price="20.00", status="refunded", now=START)
        for p, credits, after in ((p1, 100, 100), (p2, 500, 600), (p3, 250, 850)):
            await old.ledger(
                account=alice, user_id=a, kind="purchase", monthly=0, purchased=credits, after=(200, after),
                now=START, key=f"purchase:{p}", purchase_id=p,
            )  # fmt: skip
        await old.ledger(
            account=alice, user_id=a, kind="clawback", monthly=0, purchased=-250, after=(200, 600), now=START,
            key=f"clawback:{p3}", purchase_id=p3,
        )  # fmt: skip
        for monthly, purchased, after in ((-50, 0, (150, 600)), (0, -300, (150, 300))):
            usage = await old.usage(user_id=a, credits=-(monthly + purchased), now=START)
            await old.ledger(
                account=alice, user_id=a, kind="charge", monthly=monthly, purchased=purchased, after=after,
                now=START, usage_log_id=usage,
            )  # fmt: skip

        bob = await old.account(user_id=b, tier_id=free, monthly=12, purchased=40, start=START, end=END)
        await old.ledger(
            account=bob, user_id=b, kind="monthly_grant", monthly=20, purchased=0, after=(20, 0), now=START
        )
        await old.ledger(account=bob, user_id=b, kind="adjustment", monthly=0, purchased=40, after=(20, 40), now=START)
        usage = await old.usage(user_id=b, credits=8, now=START)
        await old.ledger(
            account=bob,
            user_id=b,
            kind="charge",
            monthly=-8,
            purchased=0,
            after=(12, 40),
            now=START,
            usage_log_id=usage,
        )

        carol = await old.account(user_id=c, tier_id=starter, monthly=250, purchased=0, start=START, end=END)
        await old.ledger(
            account=carol, user_id=c, kind="monthly_grant", monthly=200, purchased=0, after=(200, 0), now=START
        )
        await old.ledger(
            account=carol, user_id=c, kind="adjustment", monthly=50, purchased=0, after=(250, 0), now=START
        )

        team = await old.account(org_id=org, tier_id=free, monthly=20, purchased=800, start=START, end=END)
        await old.ledger(
            account=team, user_id=None, kind="monthly_grant", monthly=20, purchased=0, after=(20, 0), now=START
        )
        p4 = await old.purchase(user_id=a, org_id=org, credits=1000, price="60.00", status="completed", now=START)
        await old.ledger(
            account=team, user_id=a, kind="purchase", monthly=0, purchased=1000, after=(20, 1000), now=START,
            key=f"purchase:{p4}", purchase_id=p4,
        )  # fmt: skip
        usage = await old.usage(user_id=a, org_id=org, credits=200, now=START)
        await old.ledger(
            account=team, user_id=a, kind="charge", monthly=0, purchased=-200, after=(20, 800), now=START,
            usage_log_id=usage,
        )  # fmt: skip
        await conn.commit()
    balances = {alice: (150, 300), bob: (12, 40), carol: (250, 0), team: (20, 800)}
    return Old(alice, bob, carol, team, starter, balances)


async def _balances(db: Database) -> dict[int, tuple[int, int, int]]:
    async with db.transaction() as s:
        rows = await s.execute(
            select(
                UserSubscription.id,
                UserSubscription.credits_remaining,
                UserSubscription.purchased_credits_remaining,
                UserSubscription.promotional_credits_remaining,
            )
        )
        return {r[0]: (r[1], r[2], r[3]) for r in rows}


async def _grant_sums(db: Database) -> dict[int, tuple[int, int, int]]:
    async with db.transaction() as s:
        grants = (await s.execute(select(CreditGrant))).scalars().all()
    sums: dict[int, dict[str, int]] = {}
    for g in grants:
        sums.setdefault(g.subscription_id, {"plan": 0, "paid": 0, "promotional": 0})[g.category] += g.remaining
    return {k: (v["plan"], v["paid"], v["promotional"]) for k, v in sums.items()}


async def _ledger_sums(db: Database, accounts: list[int]) -> dict[int, tuple[int, int, int]]:
    async with db.transaction() as s:
        sums = {a: await billing.ledger_sums(s, subscription_id=a) for a in accounts}
    return {a: (b.monthly, b.purchased, b.promotional) for a, b in sums.items()}


async def _grants_of(db: Database, account: int) -> dict[str, CreditGrant]:
    async with db.transaction() as s:
        grants = (await s.execute(select(CreditGrant).where(CreditGrant.subscription_id == account))).scalars().all()
    assert len({g.category for g in grants}) == len(grants), "one grant per category after the migration"
    return {g.category: g for g in grants}


@backends
async def test_the_upgrade_turns_balances_into_grants_without_losing_a_credit(backend: str, tmp_path: Path) -> None:
    async with scratch_database(backend, tmp_path) as db:
        old = await _fill(db)
        async with db.transaction() as s:
            ledger_rows = await s.scalar(select(func.count()).select_from(CreditLedger.__table__))
        await migrate(db, "heads")

        expected = {a: (m, p, 0) for a, (m, p) in old.balances.items()}
        assert await _balances(db) == expected
        assert await _grant_sums(db) == expected
        assert await _ledger_sums(db, list(expected)) == expected
        async with db.transaction() as s:  # no ledger row lost to a table rebuild
            assert await s.scalar(select(func.count()).select_from(CreditLedger.__table__)) == ledger_rows

        alice = await _grants_of(db, old.alice)
        # 100 credits for $10 and 500 for $40 (the refunded pack does not count): 600 for $50; 300 left: $25.
        assert (alice["paid"].credits, alice["paid"].remaining, alice["paid"].price) == (300, 300, Decimal("25.00"))
        assert alice["paid"].expires_at is None
        plan = alice["plan"]
        assert (plan.credits, plan.remaining, plan.price, plan.tier_id) == (200, 150, Decimal("19.00"), old.starter)
        assert (plan.effective_at, plan.expires_at) == (START, END)
        assert (await _grants_of(db, old.bob))["paid"].price == Decimal("0.00")  # an admin's credits cost nothing
        carol = (await _grants_of(db, old.carol))["plan"]
        assert (carol.credits, carol.remaining) == (250, 250)  # never less than what is left
        assert "paid" not in await _grants_of(db, old.carol)
        # The pool's pack counts for the pool only: 1000 credits for $60, 800 left: $48.
        assert (await _grants_of(db, old.team))["paid"].price == Decimal("48.00")

        report = await books.check_books(db, clock=lambda: NOW)
        assert report.ok, report.first()

        async with db.transaction() as s:  # the app works on the migrated books: the plan's credits go first
            await sync_catalog(s, load_catalog())
            alice_id = (await s.get(UserSubscription, old.alice)).user_id  # type: ignore[union-attr]
            charged = await billing.charge(s, user_id=alice_id, amount=10, action_type="tool_use", now=NOW)
            rows = (
                (await s.execute(select(CreditLedger).where(CreditLedger.usage_log_id == charged.usage_log_id)))
                .scalars()
                .all()
            )
        assert [(r.grant_id, r.monthly_delta, r.purchased_delta) for r in rows] == [(plan.id, -10, 0)]
        assert charged.balance == billing.Balance(140, 300, 0)
        assert (await books.check_books(db, clock=lambda: NOW)).ok


@backends
async def test_the_downgrade_keeps_every_credit_promotional_ones_as_purchased(backend: str, tmp_path: Path) -> None:
    async with scratch_database(backend, tmp_path) as db:
        old = await _fill(db)
        await migrate(db, "heads")
        async with db.transaction() as s:
            await sync_catalog(s, load_catalog())
            alice_id = (await s.get(UserSubscription, old.alice)).user_id  # type: ignore[union-attr]
            await grant_promotional(
                s,
                user_id=alice_id,
                credits=30,
                reason="sorry",
                admin_id=None,
                now=NOW,
                expires_at=NOW + timedelta(days=3),
            )
            await grant_promotional(s, user_id=alice_id, credits=25, reason="welcome back", admin_id=None, now=NOW)
            # The promotional grant expiring first, then the plan's: 30 + 130; the other promotional one stays.
            await billing.charge(s, user_id=alice_id, amount=160, action_type="tool_use", now=NOW)
        before = await _balances(db)
        assert before[old.alice] == (20, 300, 25)
        async with db.transaction() as s:
            ledger_rows = await s.scalar(select(func.count()).select_from(CreditLedger.__table__))

        await migrate(db, "0008", down=True)

        async with db.transaction() as s:
            rows = (
                await s.execute(
                    text("SELECT id, credits_remaining, purchased_credits_remaining FROM user_subscriptions")
                )
            ).all()
            sums = (
                await s.execute(
                    text(
                        "SELECT subscription_id, SUM(monthly_delta), SUM(purchased_delta) FROM credit_ledger "
                        "GROUP BY subscription_id"
                    )
                )
            ).all()
            assert await s.scalar(text("SELECT count(*) FROM credit_ledger")) == ledger_rows
        after = {r[0]: (r[1], r[2]) for r in rows}
        assert after == {a: (m, p + promo) for a, (m, p, promo) in before.items()}
        assert {r[0]: (int(r[1]), int(r[2])) for r in sums} == after


async def _old_charges(db: Database, account: int) -> dict[str, int]:
    """Alice's charges made before grants (their rows name no grant), by the balance they took from."""
    async with db.transaction() as s:
        rows = (
            await s.execute(
                select(CreditLedger).where(CreditLedger.subscription_id == account, CreditLedger.kind == "charge")
            )
        ).scalars()
        return {("monthly" if r.monthly_delta else "purchased"): int(r.usage_log_id or 0) for r in rows}


@backends
async def test_a_charge_made_before_grants_is_refunded_without_reviving_an_ended_periods_credits(
    backend: str, tmp_path: Path
) -> None:
    async with scratch_database(backend, tmp_path) as db:
        old = await _fill(db)
        await migrate(db, "heads")
        charges = await _old_charges(db, old.alice)
        async with db.transaction() as s:
            await sync_catalog(s, load_catalog())
            alice_id = (await s.get(UserSubscription, old.alice)).user_id  # type: ignore[union-attr]
        later = END + timedelta(days=1)
        # The period the monthly credits were taken in has ended, and nobody read the account since:
        # the refund used to fail (a plan grant from now until the period's end, already past).
        async with db.transaction() as s:
            await billing.refund(s, usage_log_id=charges["monthly"], now=later, error_message="interrupted")
            await billing.refund(s, usage_log_id=charges["purchased"], now=later, error_message="interrupted")
        async with db.transaction() as s:
            sub = await billing.get_account(s, user_id=alice_id, now=later)
            # The new period's 200, the paid credits and the 300 refunded; the ended period's 50 stay gone.
            assert billing.Balance.of(sub) == billing.Balance(200, 600, 0)
        # Bob's account was renewed first: his old charge's monthly credits do not move into the new period.
        bob_charge = (await _old_charges(db, old.bob))["monthly"]
        async with db.transaction() as s:
            bob_id = (await s.get(UserSubscription, old.bob)).user_id  # type: ignore[union-attr]
            assert billing.Balance.of(await billing.get_account(s, user_id=bob_id, now=later)) == billing.Balance(
                20, 40, 0
            )
        async with db.transaction() as s:
            refunded = await billing.refund(s, usage_log_id=bob_charge, now=later, error_message="interrupted")
            assert refunded.balance == billing.Balance(20, 40, 0)
        assert (await books.check_books(db, clock=lambda: later)).ok


@backends
async def test_a_charge_made_before_grants_is_refunded_to_the_period_it_was_taken_in(
    backend: str, tmp_path: Path
) -> None:
    async with scratch_database(backend, tmp_path) as db:
        old = await _fill(db)
        await migrate(db, "heads")
        charges = await _old_charges(db, old.alice)
        async with db.transaction() as s:
            alice_id = (await s.get(UserSubscription, old.alice)).user_id  # type: ignore[union-attr]
            await billing.refund(s, usage_log_id=charges["monthly"], now=NOW, error_message="interrupted")
            assert billing.Balance.of(await billing.get_account(s, user_id=alice_id, now=NOW)) == billing.Balance(
                200, 300, 0
            )
        async with db.transaction() as s:  # ...and they end with it
            await sync_catalog(s, load_catalog())
            sub = await billing.get_account(s, user_id=alice_id, now=END + timedelta(hours=1))
            assert billing.Balance.of(sub) == billing.Balance(200, 300, 0)
            plan = [g for g in await active_grants(s, user_id=alice_id, now=END + timedelta(hours=1))]
            assert [(g.category, g.remaining, g.effective_at) for g in plan if g.category == "plan"] == [
                ("plan", 200, END)
            ]
        assert (await books.check_books(db, clock=lambda: NOW)).ok
