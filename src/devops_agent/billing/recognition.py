"""Revenue recognition: what a month earned, what it sold, and what is still owed in credits.

Read-only, from the grants (``CreditGrant``) and their ledger rows; nothing here moves a
balance. Every figure is in USD for a UTC month ``[start, end)``; an event belongs to
the month its row was written in (``created_at``).

* **Plan revenue**: a plan grant's price (the tier's monthly price) is earned evenly
  over the time it serves, ``[effective_at, stop)``, whatever its credits do: a plan
  sells access for a period, not credits. ``stop`` is its expiry, or sooner the start of
  the account's next plan grant (an upgrade ends the old plan at once, and nothing of
  it is owed any more, so the rest of its price is earned then). Free plans and the
  fresh grants a refund makes (``refund:*``) add nothing.
* **Packs** (paid grants) are sold credits: their price is deferred revenue when sold
  and is earned credit by credit at the grant's cost basis (``price / credits``):

  - **pack sales**: the price of paid grants created in the month, except the fresh
    grants a refund makes (``refund:grant:<id>``: the money was received with the
    original grant);
  - **recognized**: credits consumed, net: charges less the refunds given back to
    the grant, and admins' negative adjustments;
  - **breakage**: credits that expired unused (the grant's ``expiry`` rows);
  - **refunds**: credits taken back when their pack was refunded or disputed
    (``clawback`` rows): the deferred revenue that the refund releases, not the cash
    refunded (a pack partly spent was partly earned already);
  - **deferred revenue**: sales less recognized, breakage and refunds, at the month's
    start and end, so that ``start + sales - recognized - breakage - refunds = end``.

  A refund given back to a grant that has expired since lands on a fresh grant that
  expires at once (``grants.give_back``): its credits are un-consumed (negative
  recognized) and expire (breakage), so the original pack's price ends up split
  between revenue and breakage by what was really used.

* **Migrated balances**: the paid grant a migrated account got for its purchased
  credits (source ``balance before grants``, priced at their weighted cost basis) is an
  opening balance: deferred from the start of time, never a sale. Months before the
  grants existed show that opening balance and nothing else; their sales and use were
  not recorded per grant.

**Rounding, exactly to the cent.** Rounding each month's credits separately would let
cents drift, so the roll-forward would miss by a cent and a fully spent pack would
not earn exactly its price. Instead every figure is a difference of cumulative amounts
rounded once per grant: with ``consumed(t)``, ``expired(t)`` and ``clawed(t)`` the
grant's credits moved before ``t`` and ``money(x) = round_half_even(price * x /
credits, 2)``, recognized(t) = money(consumed), breakage(t) = money(consumed + expired)
- money(consumed), refunds(t) = money(consumed + expired + clawed) - money(consumed +
expired), sales(t) = price once created; deferred(t) = sales - the three. A month's
figure is ``cum(end) - cum(start)``, so the months add up, the roll-forward holds to the
cent, and a pack's figures over its life add up to its price. Plan revenue likewise:
``cum(t) = round(price * clamp((t - effective_at) / (stop - effective_at), 0, 1), 2)``.

A month whose accounts have not all been reset yet (resets are lazy, and ``reset-due``
runs them) may still gain the plan grants of periods that started in it; a closed,
reset month does not change.

The database sums each grant's ledger rows before every month boundary asked for (one
row per grant, however many charges), so a year of months is one query per kind.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from sqlalchemy import and_, case, func, not_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from .models import CreditGrant, CreditLedger, GrantCategory, LedgerKind
from .periods import add_months

CENT = Decimal("0.01")
ZERO = Decimal("0.00")
CURRENCY = "usd"
# The paid grant migration 0014 made of an account's purchased credits: an opening balance.
OPENING_SOURCE = "balance before grants"
# A refund's fresh grants (``grants.give_back``): not a sale, nor a plan's period.
REFUND_SOURCES = "refund%"
FIRST_YEAR, LAST_YEAR = 2000, 2999
COLUMNS = (
    "month",
    "currency",
    "plan_revenue",
    "pack_sales",
    "pack_revenue_recognized",
    "breakage",
    "refunds",
    "deferred_revenue_start",
    "deferred_revenue_end",
)

_CONSUMING = or_(
    CreditLedger.kind.in_((LedgerKind.CHARGE.value, LedgerKind.REFUND.value)),
    and_(CreditLedger.kind == LedgerKind.ADJUSTMENT.value, CreditLedger.purchased_delta < 0),
)
_EXPIRING = CreditLedger.kind.in_((LedgerKind.EXPIRY.value, LedgerKind.TIER_CHANGE.value))
_CLAWING = CreditLedger.kind == LedgerKind.CLAWBACK.value


@dataclass(frozen=True)
class Recognition:
    """One UTC month's revenue figures (USD, two places); see the module docstring for each."""

    month: str  # YYYY-MM
    start: datetime
    end: datetime
    plan_revenue: Decimal
    pack_sales: Decimal
    pack_revenue_recognized: Decimal
    breakage: Decimal
    refunds: Decimal
    deferred_revenue_start: Decimal
    deferred_revenue_end: Decimal
    currency: str = CURRENCY


@dataclass(frozen=True)
class _Cumulative:
    """Everything recorded before one moment."""

    plan_revenue: Decimal = ZERO
    pack_sales: Decimal = ZERO
    recognized: Decimal = ZERO
    breakage: Decimal = ZERO
    refunds: Decimal = ZERO

    @property
    def deferred(self) -> Decimal:
        return self.pack_sales - self.recognized - self.breakage - self.refunds

    def __add__(self, other: _Cumulative) -> _Cumulative:
        return _Cumulative(
            self.plan_revenue + other.plan_revenue,
            self.pack_sales + other.pack_sales,
            self.recognized + other.recognized,
            self.breakage + other.breakage,
            self.refunds + other.refunds,
        )


def month_start(year: int, month: int) -> datetime:
    """The first instant of a UTC month (``ValueError`` outside years 2000 to 2999)."""
    if not FIRST_YEAR <= year <= LAST_YEAR:
        raise ValueError(f"years {FIRST_YEAR} to {LAST_YEAR} only")
    return datetime(year, month, 1, tzinfo=UTC)


def _cents(amount: Decimal) -> Decimal:
    return amount.quantize(CENT, rounding=ROUND_HALF_EVEN)


def _money(price: Decimal, credits: int, moved: int) -> Decimal:
    """``moved`` of a grant's ``credits`` at its cost basis, rounded once (the cumulative rule)."""
    return _cents(price * moved / credits) if credits else ZERO


async def recognition(session: AsyncSession, *, year: int, month: int) -> Recognition:
    """The revenue figures of a UTC month."""
    return (await recognition_by_month(session, first=(year, month), last=(year, month)))[0]


async def recognition_by_month(
    session: AsyncSession, *, first: tuple[int, int], last: tuple[int, int]
) -> list[Recognition]:
    """The figures of every UTC month from ``first`` to ``last`` (``(year, month)``, both included)."""
    start, _ = month_start(*first), month_start(*last)  # both in range, or ValueError
    months = (last[0] - first[0]) * 12 + last[1] - first[1] + 1
    if months < 1:
        raise ValueError("the last month is before the first")
    bounds = [add_months(start, n) for n in range(months + 1)]
    packs = await _pack_cumulatives(session, bounds)
    plans = await _plan_cumulatives(session, bounds)
    cums = [p + q for p, q in zip(packs, plans, strict=True)]
    return [
        Recognition(
            month=f"{begin:%Y-%m}",
            start=begin,
            end=end,
            plan_revenue=after.plan_revenue - before.plan_revenue,
            pack_sales=after.pack_sales - before.pack_sales,
            pack_revenue_recognized=after.recognized - before.recognized,
            breakage=after.breakage - before.breakage,
            refunds=after.refunds - before.refunds,
            deferred_revenue_start=before.deferred,
            deferred_revenue_end=after.deferred,
        )
        for begin, end, before, after in zip(bounds, bounds[1:], cums, cums[1:], strict=False)
    ]


def _credits_out(kind: Any, before: datetime) -> Any:
    """The credits a grant gave up through ``kind`` rows written before ``before`` (paid grants: purchased)."""
    moved = case((and_(kind, CreditLedger.created_at < before), -CreditLedger.purchased_delta), else_=0)
    return func.coalesce(func.sum(moved), 0)


async def _pack_cumulatives(session: AsyncSession, bounds: Sequence[datetime]) -> list[_Cumulative]:
    """Pack sales, recognized, breakage and refunds before each of ``bounds``: one row per paid grant."""
    last = bounds[-1]
    columns = [
        _credits_out(kind, at).label(f"{name}{n}")
        for n, at in enumerate(bounds)
        for name, kind in (("consumed", _CONSUMING), ("expired", _EXPIRING), ("clawed", _CLAWING))
    ]
    grant = CreditGrant
    query = (
        select(grant.price, grant.credits, grant.created_at, grant.source, *columns)
        .select_from(grant)
        .outerjoin(CreditLedger, and_(CreditLedger.grant_id == grant.id, CreditLedger.created_at < last))
        .where(
            grant.category == GrantCategory.PAID.value,
            grant.price > 0,
            or_(grant.created_at < last, grant.source == OPENING_SOURCE),
        )
        .group_by(grant.id, grant.price, grant.credits, grant.created_at, grant.source)
    )
    totals = [_Cumulative() for _ in bounds]
    for row in await session.execute(query):
        price, credits = Decimal(row.price), int(row.credits)
        opening = row.source == OPENING_SOURCE
        sold_ever = not opening and not row.source.startswith("refund")
        for n, at in enumerate(bounds):
            consumed = int(row._mapping[f"consumed{n}"])
            expired = consumed + int(row._mapping[f"expired{n}"])
            clawed = expired + int(row._mapping[f"clawed{n}"])
            sold = opening or (sold_ever and row.created_at < at)
            money_consumed = _money(price, credits, consumed)
            money_expired = _money(price, credits, expired)
            totals[n] += _Cumulative(
                pack_sales=price if sold else ZERO,
                recognized=money_consumed,
                breakage=money_expired - money_consumed,
                refunds=_money(price, credits, clawed) - money_expired,
            )
    return totals


async def _plan_cumulatives(session: AsyncSession, bounds: Sequence[datetime]) -> list[_Cumulative]:
    """Plan revenue earned before each of ``bounds`` by the plan grants that serve between them.

    Grants over before the first bound or starting after the last add the same to every
    bound (all or nothing), so they are left out: only differences are reported.
    """
    first, last = bounds[0], bounds[-1]
    plan, later = CreditGrant, aliased(CreditGrant)
    successor = (
        select(func.min(later.effective_at))
        .where(
            later.subscription_id == plan.subscription_id,
            later.category == GrantCategory.PLAN.value,
            later.id > plan.id,
            not_(later.source.like(REFUND_SOURCES)),
        )
        .scalar_subquery()
    )
    query = select(plan.price, plan.effective_at, plan.expires_at, successor.label("successor_at")).where(
        plan.category == GrantCategory.PLAN.value,
        plan.price > 0,
        not_(plan.source.like(REFUND_SOURCES)),
        plan.effective_at < last,
        or_(plan.expires_at.is_(None), plan.expires_at > first),
    )
    earned = [ZERO for _ in bounds]
    for row in await session.execute(query):
        starts: datetime = row.effective_at
        ends = [at for at in (row.expires_at, row.successor_at) if at is not None]
        stop = max(min(ends), starts) if ends else starts
        for n, at in enumerate(bounds):
            earned[n] += _earned(Decimal(row.price), starts, stop, at)
    return [_Cumulative(plan_revenue=amount) for amount in earned]


def _earned(price: Decimal, starts: datetime, stop: datetime, at: datetime) -> Decimal:
    """A plan's price earned evenly over ``[starts, stop)``, by ``at``, rounded once."""
    if at >= stop:
        return price
    if at <= starts:
        return ZERO
    micro = timedelta(microseconds=1)
    return _cents(price * ((at - starts) // micro) / ((stop - starts) // micro))


def recognition_csv(months: Sequence[Recognition]) -> str:
    """The months as CSV for the accountant: a header, then one row per month (``COLUMNS``).

    Every cell is a month label or an amount the code wrote, never a customer's text,
    so there is no formula to defuse (a negative amount stays a number).
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for m in months:
        writer.writerow(
            (
                m.month,
                m.currency,
                *(
                    f"{amount:.2f}"
                    for amount in (
                        m.plan_revenue,
                        m.pack_sales,
                        m.pack_revenue_recognized,
                        m.breakage,
                        m.refunds,
                        m.deferred_revenue_start,
                        m.deferred_revenue_end,
                    )
                ),
            )
        )
    return out.getvalue()
