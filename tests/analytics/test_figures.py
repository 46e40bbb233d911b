"""Each admin and customer figure on the seeded business whose answers are known (see seed.py)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from sqlalchemy import update

from devops_agent.billing import analytics
from devops_agent.billing.catalog import load_catalog
from devops_agent.billing.models import CreditLedger, LedgerKind, SubscriptionTier
from devops_agent.db import Database
from tests.analytics.seed import FEB, JAN, seed_business

JAN_FEB = (JAN[0], FEB[1])


async def test_revenue_figures(db: Database) -> None:
    await seed_business(db)
    async with db.transaction() as s:
        report = await analytics.revenue_report(s, start=JAN_FEB[0], end=JAN_FEB[1])
        feb_churn = await analytics.churn(s, start=FEB[0], end=FEB[1])
        jan_churn = await analytics.churn(s, start=JAN[0], end=JAN[1])

    # alice $19 + bob $79; carol is past due, dave is back on Free.
    assert report.mrr == Decimal("98.00")
    assert report.subscribers_by_tier == {"free": 2, "starter": 1, "professional": 1, "business": 1}
    months = {m.month: (m.gross, m.refunds, m.net) for m in report.pack_revenue_by_month}
    assert months == {
        "2026-01": (Decimal("30.00"), Decimal("0.00"), Decimal("30.00")),
        "2026-02": (Decimal("35.00"), Decimal("10.00"), Decimal("25.00")),
    }
    assert report.pack_revenue == Decimal("55.00")
    # Four accounts were paid on Feb 1 (carol too: past due is not gone); dave left.
    assert (feb_churn.paid_at_start, feb_churn.churned, feb_churn.rate) == (4, 1, 0.25)
    # Nobody was paid on Jan 1.
    assert (jan_churn.paid_at_start, jan_churn.churned) == (0, 0)


async def test_usage_figures(db: Database) -> None:
    ids = await seed_business(db)
    start, end = datetime(2026, 1, 16, tzinfo=UTC), datetime(2026, 1, 19, tzinfo=UTC)
    async with db.transaction() as s:
        per_day = await analytics.credits_per_day(s, start=start, end=end)
        top_users = await analytics.top_users(s, start=start, end=end)
        tools = await analytics.tool_usage(s, start=start, end=end)

    # Jan 16: alice's 3 messages; Jan 17: her EC2 instance (5) + bob's 2 listings, her refunded one is 0.
    assert [(d.day, d.credits) for d in per_day] == [
        (date(2026, 1, 16), 3),
        (date(2026, 1, 17), 7),
        (date(2026, 1, 18), 0),
    ]
    assert [(u.user_id, u.name, u.credits_used) for u in top_users] == [(ids.alice, "alice", 8), (ids.bob, "bob", 2)]
    assert [(t.name, t.count, t.credits_used, t.failures) for t in tools] == [
        ("agent_message", 3, 3, 0),
        ("get_ec2_instances", 3, 2, 2),
        ("create_ec2_instance", 1, 5, 0),
    ]
    assert tools[1].failure_rate == pytest.approx(2 / 3)


async def test_customer_analytics_csv_and_statement(db: Database) -> None:
    ids = await seed_business(db)
    async with db.transaction() as s:
        usage = await analytics.customer_usage(s, user_id=ids.alice, start=JAN[0], end=JAN[1])
        history = await analytics.usage_history_csv(s, user_id=ids.alice)
        january = await analytics.monthly_statement(s, user_id=ids.alice, year=2026, month=1)
        february = await analytics.monthly_statement(s, user_id=ids.alice, year=2026, month=2)

    assert usage.total_credits == 8
    assert len(usage.per_day) == 31
    assert {t.name: t.credits_used for t in usage.by_tool} == {
        "agent_message": 3,
        "create_ec2_instance": 5,
        "get_ec2_instances": 0,
    }

    rows = list(csv.DictReader(io.StringIO(history)))
    assert [r["tool_name"] or r["action_type"] for r in rows] == ["agent_message"] * 3 + [
        "create_ec2_instance",
        "get_ec2_instances",
    ]
    refunded = rows[-1]
    assert (refunded["credits_used"], refunded["credits_refunded"], refunded["success"]) == ("1", "1", "false")
    assert refunded["error_message"] == "'=AWS timed out"  # a formula is defused for spreadsheets

    # Free grant 20, upgrade expires 20 and grants 200, pack 250, spends 3 + 5 + 1, refund 1.
    assert january.opening_balance == 0
    assert january.closing_balance == 442
    assert january.opening_balance + sum(e.delta for e in january.entries) == january.closing_balance
    assert january.totals_by_kind == {
        "monthly_grant": 220,
        "tier_change": -20,
        "purchase": 250,
        "charge": -9,
        "refund": 1,
    }
    assert (february.opening_balance, february.closing_balance, february.entries) == (442, 442, [])
    lines = analytics.statement_csv(january).splitlines()
    assert lines[1].endswith("opening_balance,,,,0")
    assert lines[-1].endswith("closing_balance,,,,442")


SEED_PRICES = {t.name: t.monthly_price for t in load_catalog().tiers}


@pytest.mark.parametrize(
    ("users", "mix", "expected"),
    [
        # The conservative estimate (the admin page's preset): 100 users.
        (100, {"starter": 15, "professional": 4, "business": 1}, Decimal("800.00")),
        # The growth scenario (the admin page's preset): 1,000 users.
        (1000, {"free": 700, "starter": 200, "professional": 80, "business": 20}, Decimal("14100.00")),
    ],
)
def test_projection_reproduces_the_seed_scenarios(users: int, mix: dict[str, int], expected: Decimal) -> None:
    projection = analytics.project_mrr(SEED_PRICES, mix, users=users)
    assert projection.mrr == expected
    assert projection.users == users
    assert sum(projection.by_tier.values()) == expected


def test_projection_by_tier_and_bad_mixes() -> None:
    projection = analytics.project_mrr(SEED_PRICES, {"free": 700, "starter": 200, "professional": 80, "business": 20})
    assert projection.by_tier == {
        "free": Decimal("0.00"),
        "starter": Decimal("3800.00"),
        "professional": Decimal("6320.00"),
        "business": Decimal("3980.00"),
    }
    with pytest.raises(analytics.UnknownTier, match="enterprise"):
        analytics.project_mrr(SEED_PRICES, {"enterprise": 1})
    with pytest.raises(ValueError, match="more than"):
        analytics.project_mrr(SEED_PRICES, {"starter": 20}, users=10)
    with pytest.raises(ValueError, match="negative"):
        analytics.project_mrr(SEED_PRICES, {"starter": -1})


async def test_projection_uses_the_current_catalog(db: Database) -> None:
    async with db.transaction() as s:
        prices = await analytics.tier_prices(s)
    assert prices == SEED_PRICES
    assert analytics.project_mrr(prices, {"starter": 15, "professional": 4, "business": 1}).mrr == Decimal("800.00")


def test_month_window_wraps_the_year() -> None:
    assert analytics.month_window(2026, 12) == (
        datetime(2026, 12, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )
    with pytest.raises(ValueError, match="1-12"):
        analytics.month_window(2026, 13)


async def test_churn_follows_tier_ids_through_a_rename(db: Database) -> None:
    """Grants name their tier by id: renaming a plan does not hide who was paying."""
    await seed_business(db)
    async with db.transaction() as s:
        await s.execute(update(SubscriptionTier).values(display_name=SubscriptionTier.display_name + " (2025)"))
        renamed = await analytics.churn(s, start=FEB[0], end=FEB[1])
    assert (renamed.paid_at_start, renamed.churned) == (4, 1)


async def test_churn_reads_grants_written_before_tier_ids_were_recorded(db: Database) -> None:
    """Older grants carry no details: their reason's tier name still counts."""
    await seed_business(db)
    async with db.transaction() as s:
        await s.execute(
            update(CreditLedger).where(CreditLedger.kind == LedgerKind.MONTHLY_GRANT.value).values(details=None)
        )
        legacy = await analytics.churn(s, start=FEB[0], end=FEB[1])
    assert (legacy.paid_at_start, legacy.churned) == (4, 1)
