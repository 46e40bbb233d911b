"""Figures for running the business, and each customer's view of their own usage.

Read-only queries over the credits engine's tables: nothing here moves a balance.
A dashboard is only useful when each figure means one thing, so the definitions are:

* **MRR**: the sum, over subscriptions whose ``payment_status`` is ``active``, of
  their tier's *current* monthly price (not every subscription's:
  ``past_due``/``unpaid``/``cancelled`` accounts do not pay; and today's price, so a
  price change applies to everyone at once). Free accounts add $0.
* **Pack revenue**: in the month a pack purchase completes, its price; in the month
  it is refunded (its clawback ledger row), minus its price. ``net = gross - refunds``.
* **Credits spent**: ``usage_logs.credits_used`` minus what the engine refunded for
  that action (a refund ledger row), bucketed by the day the action ran.
* **Churn in a window**: accounts that were on a paid tier when the window opened
  and are on a free tier when it closes. An account's tier at a moment is the tier of
  its last monthly grant before it: ``details["tier_id"]`` of the grant, or, for grants
  written before that was recorded, the display name its reason starts with
  (``"<tier display name> tier: ..."``).

Days and months are UTC and bucketed by the database (``strftime`` on SQLite,
``to_char`` on PostgreSQL), so a year of usage is a few rows, not a year of logs.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import String, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from .models import (
    CreditLedger,
    CreditPurchase,
    LedgerKind,
    PaymentStatus,
    PurchaseStatus,
    SubscriptionTier,
    UsageLog,
    User,
    UserSubscription,
)
from .usage import tool_name

ZERO = Decimal("0.00")


# --- helpers --------------------------------------------------------------------------


def _dialect(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


def _bucket(session: AsyncSession, column: Any, unit: str) -> ColumnElement[str]:
    """The UTC day (``YYYY-MM-DD``) or month (``YYYY-MM``) of a timestamp column, as text."""
    if _dialect(session) == "sqlite":
        fmt = "%Y-%m-%d" if unit == "day" else "%Y-%m"
        return func.strftime(fmt, column, type_=String)
    fmt = "YYYY-MM-DD" if unit == "day" else "YYYY-MM"
    return func.to_char(func.timezone("UTC", column), fmt, type_=String)


def _refunds_by_usage() -> Any:
    """Credits given back per usage log (the engine refunds an action at most once)."""
    return (
        select(
            CreditLedger.usage_log_id.label("usage_log_id"),
            func.sum(CreditLedger.monthly_delta + CreditLedger.purchased_delta).label("back"),
        )
        .where(CreditLedger.kind == LedgerKind.REFUND.value, CreditLedger.usage_log_id.is_not(None))
        .group_by(CreditLedger.usage_log_id)
        .subquery()
    )


def month_window(year: int, month: int) -> tuple[datetime, datetime]:
    """The UTC calendar month as a ``[start, end)`` pair."""
    if not 1 <= month <= 12:
        raise ValueError(f"month {month} is not 1-12")
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=UTC)
    return start, end


def _days(start: datetime, end: datetime) -> list[date]:
    first, last = start.astimezone(UTC).date(), (end - timedelta(microseconds=1)).astimezone(UTC).date()
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def _months(start: datetime, end: datetime) -> list[str]:
    months: list[str] = []
    year, month = start.year, start.month
    while datetime(year, month, 1, tzinfo=UTC) < end:
        months.append(f"{year:04d}-{month:02d}")
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return months


# --- revenue --------------------------------------------------------------------------


async def mrr(session: AsyncSession) -> Decimal:
    """Monthly recurring revenue: current tier prices over ``active`` subscriptions."""
    total = (
        await session.execute(
            select(func.coalesce(func.sum(SubscriptionTier.monthly_price), 0))
            .join(UserSubscription, UserSubscription.tier_id == SubscriptionTier.id)
            .where(UserSubscription.payment_status == PaymentStatus.ACTIVE.value)
        )
    ).scalar_one()
    return Decimal(str(total)).quantize(Decimal("0.01"))


async def subscribers_by_tier(session: AsyncSession) -> dict[str, int]:
    """Accounts per tier name, every tier listed (cheapest first), zero included."""
    rows = await session.execute(
        select(SubscriptionTier.name, func.count(UserSubscription.id))
        .outerjoin(UserSubscription, UserSubscription.tier_id == SubscriptionTier.id)
        .group_by(SubscriptionTier.id, SubscriptionTier.name, SubscriptionTier.sort_order)
        .order_by(SubscriptionTier.sort_order, SubscriptionTier.id)
    )
    return {name: int(count) for name, count in rows}


@dataclass(frozen=True)
class MonthRevenue:
    month: str  # YYYY-MM
    gross: Decimal
    refunds: Decimal

    @property
    def net(self) -> Decimal:
        return self.gross - self.refunds


async def pack_revenue_by_month(session: AsyncSession, *, start: datetime, end: datetime) -> list[MonthRevenue]:
    """Credit-pack revenue per UTC month in ``[start, end)``: completed, net of refunds."""
    completed_month = _bucket(session, CreditPurchase.completed_at, "month")
    gross_rows = await session.execute(
        select(completed_month, func.sum(CreditPurchase.price_paid))
        .where(
            CreditPurchase.completed_at.is_not(None),
            CreditPurchase.completed_at >= start,
            CreditPurchase.completed_at < end,
            # A refunded purchase was revenue in the month it completed; its refund comes off later.
            CreditPurchase.payment_status.in_([PurchaseStatus.COMPLETED.value, PurchaseStatus.REFUNDED.value]),
        )
        .group_by(completed_month)
    )
    refund_month = _bucket(session, CreditLedger.created_at, "month")
    refund_rows = await session.execute(
        select(refund_month, func.sum(CreditPurchase.price_paid))
        .join(CreditPurchase, CreditPurchase.id == CreditLedger.purchase_id)
        .where(
            CreditLedger.kind == LedgerKind.CLAWBACK.value,
            CreditLedger.created_at >= start,
            CreditLedger.created_at < end,
        )
        .group_by(refund_month)
    )
    gross = {m: Decimal(str(v)) for m, v in gross_rows}
    refunds = {m: Decimal(str(v)) for m, v in refund_rows}
    return [
        MonthRevenue(m, gross.get(m, ZERO).quantize(ZERO), refunds.get(m, ZERO).quantize(ZERO))
        for m in _months(start, end)
    ]


@dataclass(frozen=True)
class Churn:
    paid_at_start: int
    churned: int

    @property
    def rate(self) -> float:
        return self.churned / self.paid_at_start if self.paid_at_start else 0.0


async def churn(session: AsyncSession, *, start: datetime, end: datetime) -> Churn:
    """Paid accounts at ``start`` that are on a free tier at ``end`` (see the module docstring)."""
    tier_columns = (SubscriptionTier.id, SubscriptionTier.display_name, SubscriptionTier.monthly_price)
    tiers = (await session.execute(select(*tier_columns))).all()
    paid_by_id = {tier_id: price > 0 for tier_id, _, price in tiers}
    paid_by_prefix = {f"{name} tier:": price > 0 for _, name, price in tiers}

    def is_paid(details: dict[str, Any] | None, reason: str | None) -> bool | None:
        if details and "tier_id" in details:
            return paid_by_id.get(int(details["tier_id"]))
        for prefix, paid in paid_by_prefix.items():
            if reason and reason.startswith(prefix):
                return paid
        return None

    grants = await session.execute(
        select(CreditLedger.subscription_id, CreditLedger.details, CreditLedger.reason, CreditLedger.created_at)
        .where(CreditLedger.kind == LedgerKind.MONTHLY_GRANT.value, CreditLedger.created_at < end)
        .order_by(CreditLedger.id)
    )
    at_start: dict[int, bool] = {}
    at_end: dict[int, bool] = {}
    for sub_id, details, reason, created_at in grants:
        paid = is_paid(details, reason)
        if paid is None:
            continue
        if created_at < start:
            at_start[sub_id] = paid
        at_end[sub_id] = paid
    paid_then = [s for s, paid in at_start.items() if paid]
    return Churn(paid_at_start=len(paid_then), churned=sum(1 for s in paid_then if not at_end.get(s, True)))


@dataclass(frozen=True)
class RevenueReport:
    mrr: Decimal
    pack_revenue: Decimal
    pack_revenue_by_month: list[MonthRevenue]
    subscribers_by_tier: dict[str, int]
    churn: Churn


async def revenue_report(
    session: AsyncSession, *, start: datetime, end: datetime, churn_start: datetime | None = None
) -> RevenueReport:
    """Every revenue figure of the admin dashboard for the window ``[start, end)``.

    Churn is measured over ``[churn_start, end)`` when given (a dashboard shows this
    month's churn beside a year of revenue), else over the whole window.
    """
    months = await pack_revenue_by_month(session, start=start, end=end)
    return RevenueReport(
        mrr=await mrr(session),
        pack_revenue=sum((m.net for m in months), ZERO),
        pack_revenue_by_month=months,
        subscribers_by_tier=await subscribers_by_tier(session),
        churn=await churn(session, start=churn_start or start, end=end),
    )


# --- projection -----------------------------------------------------------------------


@dataclass(frozen=True)
class Projection:
    mrr: Decimal
    by_tier: dict[str, Decimal]
    users: int


class UnknownTier(ValueError):
    """The tier mix names a tier the catalog does not sell."""


def project_mrr(prices: Mapping[str, Decimal], tier_mix: Mapping[str, int], *, users: int | None = None) -> Projection:
    """Expected MRR for ``tier_mix`` (users per tier name) at ``prices``.

    With ``users``, the users the mix does not place are on the cheapest (free) tier,
    as in the admin page's conservative preset: 100 users with 15 Starter,
    4 Professional and 1 Business make $800/month.
    """
    unknown = sorted(set(tier_mix) - set(prices))
    if unknown:
        raise UnknownTier(f"unknown tier(s): {', '.join(unknown)}; known: {', '.join(prices)}")
    if any(n < 0 for n in tier_mix.values()):
        raise ValueError("user counts cannot be negative")
    placed = sum(tier_mix.values())
    mix = dict(tier_mix)
    if users is not None:
        if users < placed:
            raise ValueError(f"the tier mix places {placed} users, more than the {users} given")
        cheapest = min(prices, key=lambda name: prices[name])
        mix[cheapest] = mix.get(cheapest, 0) + users - placed
    by_tier = {name: (prices[name] * mix.get(name, 0)).quantize(ZERO) for name in prices if name in mix}
    return Projection(mrr=sum(by_tier.values(), ZERO), by_tier=by_tier, users=sum(mix.values()))


async def tier_prices(session: AsyncSession) -> dict[str, Decimal]:
    """Current monthly price of every active tier, cheapest first."""
    rows = await session.execute(
        select(SubscriptionTier.name, SubscriptionTier.monthly_price)
        .where(SubscriptionTier.is_active.is_(True))
        .order_by(SubscriptionTier.sort_order, SubscriptionTier.id)
    )
    return {name: Decimal(str(price)) for name, price in rows}


# --- usage ----------------------------------------------------------------------------


@dataclass(frozen=True)
class DayCredits:
    day: date
    credits: int


async def credits_per_day(
    session: AsyncSession, *, start: datetime, end: datetime, user_id: int | None = None
) -> list[DayCredits]:
    """Credits spent (net of refunds) on each UTC day of ``[start, end)``, zero days included."""
    back = _refunds_by_usage()
    day = _bucket(session, UsageLog.created_at, "day")
    query = (
        select(day, func.sum(UsageLog.credits_used - func.coalesce(back.c.back, 0)))
        .outerjoin(back, back.c.usage_log_id == UsageLog.id)
        .where(UsageLog.created_at >= start, UsageLog.created_at < end)
        .group_by(day)
    )
    if user_id is not None:
        query = query.where(UsageLog.user_id == user_id)
    spent = {d: int(n) for d, n in await session.execute(query)}
    return [DayCredits(d, spent.get(d.isoformat(), 0)) for d in _days(start, end)]


@dataclass(frozen=True)
class UserUsage:
    user_id: int
    name: str
    credits_used: int


async def top_users(session: AsyncSession, *, start: datetime, end: datetime, limit: int = 10) -> list[UserUsage]:
    """The users who spent most credits (net of refunds) in the window, most first."""
    back = _refunds_by_usage()
    spent = func.sum(UsageLog.credits_used - func.coalesce(back.c.back, 0)).label("spent")
    rows = await session.execute(
        select(User.id, User.username, spent)
        .join(UsageLog, UsageLog.user_id == User.id)
        .outerjoin(back, back.c.usage_log_id == UsageLog.id)
        .where(UsageLog.created_at >= start, UsageLog.created_at < end)
        .group_by(User.id, User.username)
        .order_by(spent.desc(), User.id)
        .limit(limit)
    )
    return [UserUsage(int(uid), name, int(n)) for uid, name, n in rows]


@dataclass(frozen=True)
class ToolUsage:
    name: str
    count: int
    credits_used: int
    failures: int

    @property
    def failure_rate(self) -> float:
        return self.failures / self.count if self.count else 0.0


async def tool_usage(
    session: AsyncSession,
    *,
    start: datetime,
    end: datetime,
    user_id: int | None = None,
    limit: int | None = None,
) -> list[ToolUsage]:
    """Actions per tool (``agent_message`` for the message itself), most used first.

    ``count`` counts every action, failed or not; ``credits_used`` is net of refunds;
    ``failures`` are actions that ended with ``success = false``.
    """
    back = _refunds_by_usage()
    name = tool_name().label("tool")
    count = func.count(UsageLog.id).label("n")
    query = (
        select(
            name,
            count,
            func.sum(UsageLog.credits_used - func.coalesce(back.c.back, 0)),
            func.sum(case((UsageLog.success.is_(False), 1), else_=0)),
        )
        .outerjoin(back, back.c.usage_log_id == UsageLog.id)
        .where(UsageLog.created_at >= start, UsageLog.created_at < end)
        .group_by(name)
        .order_by(count.desc(), name)
    )
    if user_id is not None:
        query = query.where(UsageLog.user_id == user_id)
    if limit is not None:
        query = query.limit(limit)
    return [ToolUsage(str(t), int(n), int(c), int(f)) for t, n, c, f in await session.execute(query)]


# --- a customer's own analytics -------------------------------------------------------


@dataclass(frozen=True)
class CustomerUsage:
    start: datetime
    end: datetime
    total_credits: int
    per_day: list[DayCredits]
    by_tool: list[ToolUsage]


async def customer_usage(session: AsyncSession, *, user_id: int, start: datetime, end: datetime) -> CustomerUsage:
    """One user's credits per day and per tool over ``[start, end)`` (the plan's usage analytics)."""
    per_day = await credits_per_day(session, start=start, end=end, user_id=user_id)
    by_tool = await tool_usage(session, start=start, end=end, user_id=user_id)
    return CustomerUsage(start, end, sum(d.credits for d in per_day), per_day, by_tool)


CSV_COLUMNS = (
    "id",
    "created_at",
    "action_type",
    "tool_name",
    "credits_used",
    "credits_refunded",
    "success",
    "error_message",
    "conversation_id",
)


async def usage_history_csv(
    session: AsyncSession, *, user_id: int, start: datetime | None = None, end: datetime | None = None
) -> str:
    """A user's usage history as CSV (oldest first), refunds shown beside each action."""
    back = _refunds_by_usage()
    query = (
        select(UsageLog, func.coalesce(back.c.back, 0))
        .outerjoin(back, back.c.usage_log_id == UsageLog.id)
        .where(UsageLog.user_id == user_id)
        .order_by(UsageLog.created_at, UsageLog.id)
    )
    if start is not None:
        query = query.where(UsageLog.created_at >= start)
    if end is not None:
        query = query.where(UsageLog.created_at < end)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for log, refunded in await session.execute(query):
        writer.writerow(
            [
                log.id,
                log.created_at.isoformat(),
                log.action_type,
                log.tool_name or "",
                log.credits_used,
                int(refunded),
                "true" if log.success else "false",
                _csv_safe(log.error_message or ""),
                log.conversation_id or "",
            ]
        )
    return out.getvalue()


def _csv_safe(value: str) -> str:
    """Defuse spreadsheet formulas in free text (CSV injection)."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


@dataclass(frozen=True)
class StatementEntry:
    """One ledger row as the statement shows it (``delta``: both balances' change)."""

    id: int
    created_at: datetime
    kind: str
    reason: str | None
    monthly_delta: int
    purchased_delta: int
    delta: int
    balance_after: int


@dataclass(frozen=True)
class Statement:
    user_id: int
    month: str
    opening_balance: int
    closing_balance: int
    entries: list[StatementEntry]
    totals_by_kind: dict[str, int] = field(default_factory=dict)


async def monthly_statement(session: AsyncSession, *, user_id: int, year: int, month: int) -> Statement:
    """Every ledger entry of one UTC month, with the balances that open and close it.

    ``opening_balance + sum(deltas) == closing_balance`` always holds: the ledger is
    append-only and each row carries the balances after it.
    """
    start, end = month_window(year, month)
    account = select(UserSubscription.id).where(UserSubscription.user_id == user_id).scalar_subquery()
    before = (
        await session.execute(
            select(CreditLedger.monthly_balance_after + CreditLedger.purchased_balance_after)
            .where(CreditLedger.subscription_id == account, CreditLedger.created_at < start)
            .order_by(CreditLedger.created_at.desc(), CreditLedger.id.desc())
            .limit(1)
        )
    ).scalar_one_or_none()
    rows = (
        await session.execute(
            select(CreditLedger)
            .where(
                CreditLedger.subscription_id == account,
                CreditLedger.created_at >= start,
                CreditLedger.created_at < end,
            )
            .order_by(CreditLedger.created_at, CreditLedger.id)
        )
    ).scalars()
    entries = [
        StatementEntry(
            id=r.id,
            created_at=r.created_at,
            kind=r.kind,
            reason=r.reason,
            monthly_delta=r.monthly_delta,
            purchased_delta=r.purchased_delta,
            delta=r.delta,
            balance_after=r.monthly_balance_after + r.purchased_balance_after,
        )
        for r in rows
    ]
    totals: dict[str, int] = {}
    for e in entries:
        totals[e.kind] = totals.get(e.kind, 0) + e.delta
    opening = int(before or 0)
    return Statement(
        user_id=user_id,
        month=f"{year:04d}-{month:02d}",
        opening_balance=opening,
        closing_balance=entries[-1].balance_after if entries else opening,
        entries=entries,
        totals_by_kind=totals,
    )


def statement_csv(statement: Statement) -> str:
    """A statement as CSV, for the ``compliance_reports`` download."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("id", "created_at", "kind", "reason", "monthly_delta", "purchased_delta", "balance_after"))
    writer.writerow(("", "", "opening_balance", "", "", "", statement.opening_balance))
    for e in statement.entries:
        writer.writerow(
            (
                e.id,
                e.created_at.isoformat(),
                e.kind,
                _csv_safe(e.reason or ""),
                e.monthly_delta,
                e.purchased_delta,
                e.balance_after,
            )
        )
    writer.writerow(("", "", "closing_balance", "", "", "", statement.closing_balance))
    return out.getvalue()


__all__ = [
    "Churn",
    "CustomerUsage",
    "DayCredits",
    "MonthRevenue",
    "Projection",
    "RevenueReport",
    "Statement",
    "StatementEntry",
    "ToolUsage",
    "UnknownTier",
    "UserUsage",
    "churn",
    "credits_per_day",
    "customer_usage",
    "month_window",
    "monthly_statement",
    "mrr",
    "pack_revenue_by_month",
    "project_mrr",
    "revenue_report",
    "statement_csv",
    "subscribers_by_tier",
    "tier_prices",
    "tool_usage",
    "top_users",
    "usage_history_csv",
]
