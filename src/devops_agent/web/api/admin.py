"""The admin API (``/api/admin/*``): revenue, usage, the projection calculator, users, organizations.

Every route needs a user with ``is_admin`` (403 ``forbidden`` otherwise, 401 when
nobody is signed in). Figures come from ``billing.analytics``, whose docstring
defines each of them; users and organizations are read by ``billing.customers``. A
credit adjustment (``billing.audit.adjust_credits``: a ledger row with the admin's id
and reason), like a suspension or a restore, appends an ``admin_audit`` row in the
same transaction. The books audit, the email outbox and the page are in
``web.api.admin_system``.

Shapes scripts rely on (keep them): ``GET /revenue`` -> ``{mrr, pack_revenue,
subscribers_by_tier}``; ``POST /revenue/projection`` -> ``{mrr, by_tier}``;
``GET /usage/top-users`` and ``/usage/top-tools`` -> lists of ``{name, credits_used}``
and ``{name, count}``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from devops_agent.billing import analytics, audit, customers
from devops_agent.billing.ledger import Balance
from devops_agent.billing.models import User
from devops_agent.web.api import AUTHED, OWN_CREDITS, PageOffset, errors
from devops_agent.web.deps import AdminUser, IdempotencyKeyDep, NowDep, SessionDep
from devops_agent.web.errors import ApiError
from devops_agent.web.schemas import (
    DayOut,
    FromAttributes,
    GrantOut,
    PurchaseOut,
    Strict,
    SubscriptionOut,
    Timestamp,
    UsageLogOut,
    subscription_out,
)

router = APIRouter(prefix="/api/admin", tags=["admin"])
ADMIN_ERRORS = errors(*AUTHED)

Months = Annotated[int, Query(ge=1, le=36, description="Whole UTC months back, the current one included.")]
Days = Annotated[int, Query(ge=1, le=366, description="Days back from now, today included.")]
Limit = Annotated[int, Query(ge=1, le=100)]
UserId = Annotated[int, Path(ge=1, le=2**62, description="A user's id.")]


def _money(value: Decimal) -> float:
    return float(value)


def _month_start(now: datetime, months_back: int) -> datetime:
    year, month = now.year, now.month - months_back
    while month < 1:
        year, month = year - 1, month + 12
    return datetime(year, month, 1, tzinfo=UTC)


def _days_window(now: datetime, days: int) -> tuple[datetime, datetime]:
    """``days`` whole UTC days ending with today."""
    end = datetime(now.year, now.month, now.day, tzinfo=UTC) + timedelta(days=1)
    return end - timedelta(days=days), end


# --- revenue --------------------------------------------------------------------------


class MonthRevenueOut(FromAttributes):
    month: str
    gross: float
    refunds: float
    net: float


class ChurnOut(BaseModel):
    paid_at_start: int
    churned: int
    rate: float


class RevenueOut(BaseModel):
    mrr: float = Field(description="Current tier prices over `active` subscriptions, USD per month.")
    pack_revenue: float = Field(description="Credit packs completed in the window, net of refunds, USD.")
    subscribers_by_tier: dict[str, int]
    pack_revenue_by_month: list[MonthRevenueOut]
    churn: ChurnOut = Field(description="This calendar month so far: paid accounts on the 1st now on a free tier.")
    start: Timestamp
    end: Timestamp


@router.get(
    "/revenue",
    response_model=RevenueOut,
    summary="MRR, pack revenue by month, subscribers per tier, churn",
    responses=ADMIN_ERRORS,
)
async def revenue(_admin: AdminUser, session: SessionDep, now: NowDep, months: Months = 12) -> RevenueOut:
    start, end = _month_start(now, months - 1), now
    # Churn is a rate per month whatever the revenue window: this month so far.
    report = await analytics.revenue_report(session, start=start, end=end, churn_start=_month_start(now, 0))
    churn = report.churn
    return RevenueOut(
        mrr=_money(report.mrr),
        pack_revenue=_money(report.pack_revenue),
        subscribers_by_tier=report.subscribers_by_tier,
        pack_revenue_by_month=[MonthRevenueOut.model_validate(m) for m in report.pack_revenue_by_month],
        churn=ChurnOut(paid_at_start=churn.paid_at_start, churned=churn.churned, rate=round(churn.rate, 4)),
        start=start,
        end=end,
    )


class ProjectionIn(Strict):
    tier_mix: dict[str, Annotated[int, Field(ge=0, le=10_000_000)]] = Field(
        description='Users per tier name, e.g. {"starter": 15, "professional": 4, "business": 1}.'
    )
    users: Annotated[int | None, Field(ge=0, le=100_000_000)] = Field(
        default=None, description="Total users; those the mix does not place are on the free tier."
    )


class ProjectionOut(FromAttributes):
    mrr: float
    by_tier: dict[str, float]
    users: int


@router.post(
    "/revenue/projection",
    response_model=ProjectionOut,
    summary="Expected MRR for a user count and a tier mix, at current prices",
    responses=ADMIN_ERRORS,
)
async def projection(body: ProjectionIn, _admin: AdminUser, session: SessionDep) -> ProjectionOut:
    prices = await analytics.tier_prices(session)
    try:
        result = analytics.project_mrr(prices, body.tier_mix, users=body.users)
    except ValueError as exc:  # UnknownTier included
        raise ApiError(400, "invalid_request", str(exc)) from exc
    return ProjectionOut.model_validate(result)


# --- usage ----------------------------------------------------------------------------


class DailyOut(BaseModel):
    days: list[DayOut]
    total: int


@router.get(
    "/usage/daily", response_model=DailyOut, summary="Credits spent per UTC day, net of refunds", responses=ADMIN_ERRORS
)
async def usage_daily(_admin: AdminUser, session: SessionDep, now: NowDep, days: Days = 30) -> DailyOut:
    start, end = _days_window(now, days)
    per_day = await analytics.credits_per_day(session, start=start, end=end)
    return DailyOut(
        days=[DayOut(day=d.day.isoformat(), credits=d.credits) for d in per_day], total=sum(d.credits for d in per_day)
    )


class TopUserOut(FromAttributes):
    user_id: int
    name: str
    credits_used: int


@router.get(
    "/usage/top-users",
    response_model=list[TopUserOut],
    summary="The users who spent most credits",
    responses=ADMIN_ERRORS,
)
async def top_users(
    _admin: AdminUser, session: SessionDep, now: NowDep, days: Days = 30, limit: Limit = 10
) -> list[TopUserOut]:
    start, end = _days_window(now, days)
    rows = await analytics.top_users(session, start=start, end=end, limit=limit)
    return [TopUserOut.model_validate(r) for r in rows]


class TopToolOut(BaseModel):
    name: str
    count: int
    credits_used: int
    failures: int
    failure_rate: float


def _tool_out(t: analytics.ToolUsage) -> TopToolOut:
    return TopToolOut(
        name=t.name,
        count=t.count,
        credits_used=t.credits_used,
        failures=t.failures,
        failure_rate=round(t.failure_rate, 4),
    )


@router.get(
    "/usage/top-tools",
    response_model=list[TopToolOut],
    summary="The most used tools, with failure rates",
    responses=ADMIN_ERRORS,
)
async def top_tools(
    _admin: AdminUser, session: SessionDep, now: NowDep, days: Days = 30, limit: Limit = 10
) -> list[TopToolOut]:
    start, end = _days_window(now, days)
    return [_tool_out(t) for t in await analytics.tool_usage(session, start=start, end=end, limit=limit)]


# --- users ----------------------------------------------------------------------------


class UserSummaryOut(FromAttributes):
    id: int
    username: str
    email: str
    is_admin: bool
    is_suspended: bool
    email_opt_out: bool
    created_at: Timestamp


class UsersOut(BaseModel):
    users: list[UserSummaryOut]


@router.get("/users", response_model=UsersOut, summary="Find users by id, username or email", responses=ADMIN_ERRORS)
async def find_users(
    _admin: AdminUser,
    session: SessionDep,
    q: Annotated[str, Query(max_length=254, description="Part of a username or email, or a user id.")] = "",
    limit: Limit = 20,
) -> UsersOut:
    found = await customers.find_users(session, q=q, limit=limit)
    return UsersOut(users=[UserSummaryOut.model_validate(u) for u in found])


class AdminLedgerEntryOut(BaseModel):
    id: int
    created_at: Timestamp
    kind: str
    monthly_delta: int
    purchased_delta: int
    promotional_delta: int
    balance_after: int = Field(
        description="Every credit of the account after the row: monthly, purchased, promotional."
    )
    reason: str | None
    admin_id: int | None


class BalanceOut(FromAttributes):
    monthly: int
    purchased: int
    total: int


class AuditOut(FromAttributes):
    id: int
    created_at: Timestamp
    admin_id: int | None
    action: str
    target_user_id: int | None
    reason: str
    ledger_id: int | None


class UserDetailOut(BaseModel):
    user: UserSummaryOut
    subscription: SubscriptionOut | None
    balance: BalanceOut | None
    grants: list[GrantOut] = Field(description="The account's grants with credits left, in draw-down order.")
    ledger: list[AdminLedgerEntryOut]
    usage: list[UsageLogOut]
    purchases: list[PurchaseOut]
    audit: list[AuditOut]


def _no_user(user_id: int) -> ApiError:
    return ApiError(404, "user_not_found", f"There is no user {user_id}.")


@router.get(
    "/users/{user_id}",
    response_model=UserDetailOut,
    summary="One user: subscription, balance split, grants, ledger with reasons, usage, purchases, audit",
    responses=errors(*AUTHED, 404),
)
async def user_detail(
    user_id: UserId, _admin: AdminUser, session: SessionDep, now: NowDep, limit: Limit = 50
) -> UserDetailOut:
    found = await customers.customer_detail(session, user_id=user_id, now=now, limit=limit)
    if found is None:
        raise _no_user(user_id)
    sub = found.account
    return UserDetailOut(
        user=UserSummaryOut.model_validate(found.user),
        subscription=subscription_out(sub) if sub is not None else None,
        balance=(
            BalanceOut(monthly=sub.credits_remaining, purchased=sub.purchased_credits_remaining, total=sub.balance)
            if sub is not None
            else None
        ),
        grants=[GrantOut.model_validate(g) for g in found.grants],
        ledger=[
            AdminLedgerEntryOut(
                id=row.id,
                created_at=row.created_at,
                kind=row.kind,
                monthly_delta=row.monthly_delta,
                purchased_delta=row.purchased_delta,
                promotional_delta=row.promotional_delta,
                balance_after=Balance.after(row).total,
                reason=row.reason,
                admin_id=row.admin_id,
            )
            for row in found.ledger
        ],
        usage=[UsageLogOut.model_validate(log) for log in found.usage],
        purchases=[PurchaseOut.model_validate(p) for p in found.purchases],
        audit=[AuditOut.model_validate(e) for e in found.audit],
    )


Reason = Annotated[str, Field(min_length=3, max_length=500, description="Why: kept in the ledger and the audit log.")]


class AdjustIn(Strict):
    amount: Annotated[int, Field(ge=-1_000_000, le=1_000_000, description="Credits to give (+) or take (-).")]
    reason: Reason


class AdjustOut(BaseModel):
    ledger_id: int | None
    audit_id: int | None
    balance: BalanceOut


@router.post(
    "/users/{user_id}/adjust",
    response_model=AdjustOut,
    summary="Give or take credits, with a required reason (audited with your id)",
    responses=errors(*AUTHED, 404, payment=OWN_CREDITS),
)
async def adjust_credits(
    user_id: UserId,
    body: AdjustIn,
    admin: AdminUser,
    session: SessionDep,
    now: NowDep,
    idempotency_key: IdempotencyKeyDep,
) -> AdjustOut:
    adjusted = await audit.adjust_credits(
        session,
        admin_id=admin.id,
        user_id=user_id,
        amount=body.amount,
        reason=body.reason,
        now=now,
        idempotency_key=idempotency_key,
    )
    if adjusted is None:
        raise _no_user(user_id)
    balance = adjusted.balance
    return AdjustOut(
        ledger_id=adjusted.ledger_id,
        audit_id=adjusted.audit.id if adjusted.audit is not None else None,
        balance=BalanceOut.model_validate(balance),
    )


class SuspendIn(Strict):
    reason: Reason


class SuspensionOut(BaseModel):
    user: UserSummaryOut
    audit_id: int


async def _set_suspended(
    session: SessionDep, admin: User, user_id: int, *, suspended: bool, reason: str, now: datetime
) -> SuspensionOut:
    done = await audit.set_suspended(
        session, admin_id=admin.id, user_id=user_id, suspended=suspended, reason=reason, now=now
    )
    if done is None:
        raise _no_user(user_id)
    user, entry = done
    return SuspensionOut(user=UserSummaryOut.model_validate(user), audit_id=entry.id)


@router.post(
    "/users/{user_id}/suspend",
    response_model=SuspensionOut,
    summary="Suspend an account: it can no longer sign in or use the API",
    responses=errors(*AUTHED, 404),
)
async def suspend(
    user_id: UserId, body: SuspendIn, admin: AdminUser, session: SessionDep, now: NowDep
) -> SuspensionOut:
    return await _set_suspended(session, admin, user_id, suspended=True, reason=body.reason, now=now)


@router.post(
    "/users/{user_id}/restore",
    response_model=SuspensionOut,
    summary="Restore a suspended account",
    responses=errors(*AUTHED, 404),
)
async def restore(
    user_id: UserId, body: SuspendIn, admin: AdminUser, session: SessionDep, now: NowDep
) -> SuspensionOut:
    return await _set_suspended(session, admin, user_id, suspended=False, reason=body.reason, now=now)


class AuditListOut(BaseModel):
    entries: list[AuditOut]


@router.get("/audit", response_model=AuditListOut, summary="The newest admin actions", responses=ADMIN_ERRORS)
async def audit_log(_admin: AdminUser, session: SessionDep, limit: Limit = 50) -> AuditListOut:
    return AuditListOut(entries=[AuditOut.model_validate(e) for e in await audit.entries(session, limit=limit)])


# --- organizations --------------------------------------------------------------------


class AdminOrgOut(BaseModel):
    id: int
    name: str
    owner_id: int
    owner_username: str
    member_count: int
    tier: str
    credits_remaining: int
    credits_used_this_month: int
    created_at: Timestamp


class AdminOrgsOut(BaseModel):
    organizations: list[AdminOrgOut]
    total: int


@router.get(
    "/organizations",
    response_model=AdminOrgsOut,
    summary="Every organization with its owner, size, plan and pool (administrators)",
    responses=errors(*AUTHED),
)
async def admin_list_orgs(
    _admin: AdminUser,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: PageOffset = 0,
) -> AdminOrgsOut:
    page, total = await customers.organizations(session, limit=limit, offset=offset)
    return AdminOrgsOut(
        organizations=[
            AdminOrgOut(
                id=o.organization.id,
                name=o.organization.name,
                owner_id=o.owner_id,
                owner_username=o.owner_username,
                member_count=o.member_count,
                tier=o.tier,
                credits_remaining=o.pool.balance,
                credits_used_this_month=o.pool.credits_used_this_month,
                created_at=o.organization.created_at,
            )
            for o in page
        ],
        total=total,
    )
