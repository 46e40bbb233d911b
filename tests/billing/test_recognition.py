"""Revenue recognition: a worked month through the real billing verbs, to the cent, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select, update

from devops_agent import billing
from devops_agent.billing.models import CreditGrant, GrantCategory, UserSubscription
from devops_agent.billing.recognition import Recognition, recognition, recognition_by_month, recognition_csv
from devops_agent.db import Database
from tests.billing.recognition_story import MARCH, at, expiring_packs, play_worked_month
from tests.factories import make_user


def _figures(month: Recognition) -> dict[str, str]:
    amounts = {k: f"{v:.2f}" for k, v in vars(month).items() if isinstance(v, Decimal)}
    return {"month": month.month, "currency": month.currency, **amounts}


def _rolls_forward(m: Recognition) -> bool:
    return (
        m.deferred_revenue_start + m.pack_sales - m.pack_revenue_recognized - m.breakage - m.refunds
        == m.deferred_revenue_end
    )


async def test_the_worked_month(db: Database, tmp_path: Path) -> None:
    """March 2026 for Alice and Bob (``recognition_story.play_worked_month``), USD.

    Alice: Free from Feb 10; Starter ($19, 200 credits) from Feb 15; pack A (300
    credits, $25.00, basis 8.33c) Feb 20; spends 250 on Feb 25 (200 plan, 50 of A).
    March: pack B (100 credits, $10.00, expires Mar 22) on Mar 2; spends 70 and 20
    (U2) of B on Mar 5 and 10; Mar 16 the lazy reset grants Starter's P2 (from Mar 15)
    and she upgrades to Professional at once (P3, $79, Mar 16 - Apr 16); B's last 10
    expire (read Mar 23); A is disputed Mar 24: its 250 left are clawed back; U2
    fails and is refunded Mar 25, B having expired: a fresh grant F (source
    refund:grant:B, 20 credits, $2.00) takes the 20 and expires at once; pack C (250
    credits, $20.00) Mar 26. Bob: Free from Mar 1; an admin gives 50 credits (G,
    price 0) Mar 3; spends 60 Mar 4 (20 plan, 40 of G); pack D (200 credits, $16.00)
    Mar 5; an admin takes 30 back Mar 6 (10 of G, 20 of D).

    =====  ===================================  ======  =========  ========  =======  ==============
    grant  credits moved                         sales   recognized breakage  refunds  deferred
                                                                                       Mar 1 -> Apr 1
    =====  ===================================  ======  =========  ========  =======  ==============
    A      50 used (Feb), 250 clawed back                                     20.83    20.83 -> 0.00
    B      90 used, 10 expired                   10.00    9.00      1.00               0.00 -> 0.00
    F      20 refunded (un-used), 20 expired              -2.00      2.00               0.00 -> 0.00
    C      untouched                             20.00                                  0.00 -> 20.00
    D      20 taken by the adjustment            16.00    1.60                          0.00 -> 14.40
    G      price 0: nothing
    total                                        46.00    8.60      3.00      20.83    20.83 -> 34.40
    =====  ===================================  ======  =========  ========  =======  ==============

    Roll-forward: 20.83 + 46.00 - 8.60 - 3.00 - 20.83 = 34.40.

    Plan revenue 69.27: P1 $19 over Feb 15 - Mar 15, half of it in March (9.50); P2
    $19 from Mar 15, ended by the upgrade on Mar 16 (19.00); P3 $79 over Mar 16 -
    Apr 16, 16 of 31 days (40.77); Free plans are $0.

    A's 50 credits used in February earned round(25 x 50/300) = 4.17 then; its
    clawed 250 release the rest, 25.00 - 4.17 = 20.83, so A's life adds up to $25.00.
    F's -2.00 / +2.00 moves the refunded 20 of B from revenue to breakage: B earned
    7.00 for the 70 credits really used and 3.00 of breakage for the 30 never used.
    """
    with expiring_packs(tmp_path):
        story = await play_worked_month(db)
    async with db.transaction() as s:
        march = await recognition(s, year=2026, month=3)
        feb, march_again, april = await recognition_by_month(s, first=(2026, 2), last=(2026, 4))
        refund_grant = await s.scalar(select(CreditGrant.price).where(CreditGrant.source.like("refund:grant:%")))
        account = await billing.get_account(s, user_id=story.alice, now=at(4, 3))
    assert _figures(march) == MARCH
    assert _rolls_forward(march)
    assert march_again == march
    assert refund_grant == Decimal("2.00")
    assert account.purchased_credits_remaining == 240  # C less the 10 of April

    # The months chain: each starts where the last ended.
    assert _figures(feb) == {
        "month": "2026-02",
        "currency": "usd",
        "plan_revenue": "9.50",
        "pack_sales": "25.00",
        "pack_revenue_recognized": "4.17",
        "breakage": "0.00",
        "refunds": "0.00",
        "deferred_revenue_start": "0.00",
        "deferred_revenue_end": "20.83",
    }
    assert feb.deferred_revenue_end == march.deferred_revenue_start
    assert march.deferred_revenue_end == april.deferred_revenue_start
    # April: 10 of C (8c each) and the rest of P3 (79.00 - 40.77).
    assert (april.plan_revenue, april.pack_sales, april.pack_revenue_recognized) == (
        Decimal("38.23"),
        Decimal("0.00"),
        Decimal("0.80"),
    )
    assert april.deferred_revenue_end == Decimal("33.60")
    assert all(_rolls_forward(m) for m in (feb, march, april))


async def test_a_spent_pack_earns_exactly_its_price_across_months(db: Database) -> None:
    """300 credits for $25.00 spent 100 a month: 8.33, 8.34, 8.33, not 3 x 8.33 = 24.99."""
    async with db.transaction() as s:
        user = await make_user(s, now=datetime(2026, 1, 20, tzinfo=UTC))
        purchase = await billing.create_purchase(
            s, user_id=user.id, credits_amount=300, price_paid=Decimal("25.00"), now=datetime(2026, 1, 20, tzinfo=UTC)
        )
        await billing.grant_purchase(s, purchase_id=purchase.id, now=datetime(2026, 1, 20, tzinfo=UTC))
    for month in (1, 2, 3):  # 20 of the Free plan (renewed on the 20th), then 100 of the pack
        async with db.transaction() as s:
            when = datetime(2026, month, 25, tzinfo=UTC)
            await billing.charge(s, user_id=user.id, amount=120, action_type="agent_message", now=when)
    async with db.transaction() as s:
        months = await recognition_by_month(s, first=(2026, 1), last=(2026, 3))
    assert [m.pack_revenue_recognized for m in months] == [Decimal("8.33"), Decimal("8.34"), Decimal("8.33")]
    assert sum(m.pack_revenue_recognized for m in months) == Decimal("25.00")
    assert [m.deferred_revenue_end for m in months] == [Decimal("16.67"), Decimal("8.33"), Decimal("0.00")]
    assert all(_rolls_forward(m) for m in months)


async def test_a_migrated_balance_is_deferred_from_the_start_and_never_a_sale(db: Database) -> None:
    """Migration 0014's paid grant for the purchased credits is an opening balance: owed, never sold."""
    opened = datetime(2026, 1, 5, tzinfo=UTC)
    async with db.transaction() as s:
        user = await make_user(s, now=opened)
        sub = await billing.get_account(s, user_id=user.id, now=opened)
        # As the migration writes it: a paid grant at the weighted cost basis, no ledger row.
        s.add(
            CreditGrant(
                subscription_id=sub.id,
                category=GrantCategory.PAID.value,
                credits=100,
                remaining=100,
                priority=50,
                effective_at=opened,
                expires_at=None,
                price=Decimal("7.50"),
                source="balance before grants",
                created_at=opened,
            )
        )
        await s.execute(
            update(UserSubscription).where(UserSubscription.id == sub.id).values(purchased_credits_remaining=100)
        )
    async with db.transaction() as s:  # 20 of the Free plan, 40 of the old balance
        await billing.charge(
            s, user_id=user.id, amount=60, action_type="agent_message", now=datetime(2026, 3, 10, tzinfo=UTC)
        )
    async with db.transaction() as s:
        long_before = await recognition(s, year=2025, month=6)
        january = await recognition(s, year=2026, month=1)
        march = await recognition(s, year=2026, month=3)
    assert (long_before.deferred_revenue_start, long_before.deferred_revenue_end) == (Decimal("7.50"),) * 2
    assert january.pack_sales == Decimal("0.00")
    assert (march.deferred_revenue_start, march.pack_revenue_recognized, march.deferred_revenue_end) == (
        Decimal("7.50"),
        Decimal("3.00"),
        Decimal("4.50"),
    )
    assert all(_rolls_forward(m) for m in (long_before, january, march))


async def test_an_empty_month_is_zero_and_the_csv_has_one_row_per_month(db: Database) -> None:
    async with db.transaction() as s:
        months = await recognition_by_month(s, first=(2025, 11), last=(2026, 2))
    assert [m.month for m in months] == ["2025-11", "2025-12", "2026-01", "2026-02"]
    lines = recognition_csv(months).splitlines()
    assert lines[0] == (
        "month,currency,plan_revenue,pack_sales,pack_revenue_recognized,breakage,refunds,"
        "deferred_revenue_start,deferred_revenue_end"
    )
    assert lines[1:] == [
        f"{m},usd,0.00,0.00,0.00,0.00,0.00,0.00,0.00" for m in ("2025-11", "2025-12", "2026-01", "2026-02")
    ]


@pytest.mark.parametrize(("first", "last"), [((2026, 3), (2026, 2)), ((1999, 12), (2026, 1)), ((2026, 1), (3000, 1))])
async def test_a_range_backwards_or_out_of_years_is_refused(
    db: Database, first: tuple[int, int], last: tuple[int, int]
) -> None:
    async with db.transaction() as s:
        with pytest.raises(ValueError, match="year|before"):
            await recognition_by_month(s, first=first, last=last)
