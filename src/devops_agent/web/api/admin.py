"""The admin API (``/api/admin/*``): revenue, usage, the projection calculator, users.

Every route needs a user with ``is_admin`` (403 ``forbidden`` otherwise, 401 when
nobody is signed in). Figures come from ``billing.analytics``, whose docstring
defines each of them; a credit adjustment goes through ``billing.adjust``
(a ledger row with the admin's id and reason) and, like a suspension or a restore,
appends an ``admin_audit`` row in the same transaction.

Shapes scripts rely on (keep them): ``GET /revenue`` -> ``{mrr, pack_revenue,
subscribers_by_tier}``; ``POST /revenue/projection`` -> ``{mrr, by_tier}``;
``GET /usage/top-users`` and ``/usage/top-tools`` -> lists of ``{name, credits_used}``
and ``{name, count}``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy import func, or_, select

from devops_agent import billing
from devops_agent.billing import analytics, audit, books
from devops_agent.billing.models import CreditLedger, CreditPurchase, UsageLog, User, UserSubscription
from devops_agent.notifications import notifier_for, recent_outbox
from devops_agent.web.api import AUTHED, errors
from devops_agent.web.deps import AdminUser, ClockDep, DatabaseDep, IdempotencyKeyDep, OptionalUser, SessionDep
from devops_agent.web.errors import ApiError
from devops_agent.web.pages import render_page
from devops_agent.web.schemas import (
    PurchaseOut,
    Strict,
    SubscriptionOut,
    Timestamp,
    UsageLogOut,
    purchase_out,
    subscription_out,
    usage_log_out,
)

router = APIRouter(prefix="/api/admin", tags=["admin"])
page_router = APIRouter(include_in_schema=False)
ADMIN_ERRORS = errors(*AUTHED)

Months = Annotated[int, Query(ge=1, le=36, description="Whole UTC months back, the current one included.")]
Days = Annotated[int, Query(ge=1, le=366, description="Days back from now, today included.")]
Limit = Annotated[int, Query(ge=1, le=100)]
UserId = Annotated[int, Path(ge=1, le=2**62, description="A user's id.")]


def _escape_like(term: str) -> str:
    """``term`` as a literal inside a LIKE pattern (``%`` and ``_`` are not wildcards here)."""
    return term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


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


class MonthRevenueOut(BaseModel):
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
async def revenue(_admin: AdminUser, session: SessionDep, now: ClockDep, months: Months = 12) -> RevenueOut:
    start, end = _month_start(now, months - 1), now
    # Churn is a rate per month whatever the revenue window: this month so far.
    report = await analytics.revenue_report(session, start=start, end=end, churn_start=_month_start(now, 0))
    churn = report.churn
    return RevenueOut(
        mrr=_money(report.mrr),
        pack_revenue=_money(report.pack_revenue),
        subscribers_by_tier=report.subscribers_by_tier,
        pack_revenue_by_month=[
            MonthRevenueOut(month=m.month, gross=_money(m.gross), refunds=_money(m.refunds), net=_money(m.net))
            for m in report.pack_revenue_by_month
        ],
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


class ProjectionOut(BaseModel):
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
    return ProjectionOut(
        mrr=_money(result.mrr), by_tier={k: _money(v) for k, v in result.by_tier.items()}, users=result.users
    )


# --- usage ----------------------------------------------------------------------------


class DayOut(BaseModel):
    day: str
    credits: int


class DailyOut(BaseModel):
    days: list[DayOut]
    total: int


@router.get(
    "/usage/daily", response_model=DailyOut, summary="Credits spent per UTC day, net of refunds", responses=ADMIN_ERRORS
)
async def usage_daily(_admin: AdminUser, session: SessionDep, now: ClockDep, days: Days = 30) -> DailyOut:
    start, end = _days_window(now, days)
    per_day = await analytics.credits_per_day(session, start=start, end=end)
    return DailyOut(
        days=[DayOut(day=d.day.isoformat(), credits=d.credits) for d in per_day], total=sum(d.credits for d in per_day)
    )


class TopUserOut(BaseModel):
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
    _admin: AdminUser, session: SessionDep, now: ClockDep, days: Days = 30, limit: Limit = 10
) -> list[TopUserOut]:
    start, end = _days_window(now, days)
    rows = await analytics.top_users(session, start=start, end=end, limit=limit)
    return [TopUserOut(user_id=r.user_id, name=r.name, credits_used=r.credits_used) for r in rows]


class ToolOut(BaseModel):
    name: str
    count: int
    credits_used: int
    failures: int
    failure_rate: float


def _tool_out(t: analytics.ToolUsage) -> ToolOut:
    return ToolOut(
        name=t.name,
        count=t.count,
        credits_used=t.credits_used,
        failures=t.failures,
        failure_rate=round(t.failure_rate, 4),
    )


@router.get(
    "/usage/top-tools",
    response_model=list[ToolOut],
    summary="The most used tools, with failure rates",
    responses=ADMIN_ERRORS,
)
async def top_tools(
    _admin: AdminUser, session: SessionDep, now: ClockDep, days: Days = 30, limit: Limit = 10
) -> list[ToolOut]:
    start, end = _days_window(now, days)
    return [_tool_out(t) for t in await analytics.tool_usage(session, start=start, end=end, limit=limit)]


# --- users ----------------------------------------------------------------------------


class UserSummaryOut(BaseModel):
    id: int
    username: str
    email: str
    is_admin: bool
    is_suspended: bool
    email_opt_out: bool
    created_at: Timestamp


def _user_summary(user: User) -> UserSummaryOut:
    return UserSummaryOut(
        id=user.id,
        username=user.username,
        email=user.email,
        is_admin=user.is_admin,
        is_suspended=user.is_suspended,
        email_opt_out=user.email_opt_out,
        created_at=user.created_at,
    )


class UsersOut(BaseModel):
    users: list[UserSummaryOut]


@router.get("/users", response_model=UsersOut, summary="Find users by id, username or email", responses=ADMIN_ERRORS)
async def find_users(
    _admin: AdminUser,
    session: SessionDep,
    q: Annotated[str, Query(max_length=254, description="Part of a username or email, or a user id.")] = "",
    limit: Limit = 20,
) -> UsersOut:
    query = select(User).order_by(User.id).limit(limit)
    term = q.strip().lower()
    if term:
        pattern = "%" + _escape_like(term) + "%"
        match = or_(
            func.lower(User.username).like(pattern, escape="\\"), func.lower(User.email).like(pattern, escape="\\")
        )
        query = query.where(or_(match, User.id == int(term)) if term.isdigit() else match)
    return UsersOut(users=[_user_summary(u) for u in (await session.execute(query)).scalars()])


class LedgerEntryOut(BaseModel):
    id: int
    created_at: Timestamp
    kind: str
    monthly_delta: int
    purchased_delta: int
    balance_after: int
    reason: str | None
    admin_id: int | None


class BalanceOut(BaseModel):
    monthly: int
    purchased: int
    total: int


class AuditOut(BaseModel):
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
    ledger: list[LedgerEntryOut]
    usage: list[UsageLogOut]
    purchases: list[PurchaseOut]
    audit: list[AuditOut]


def _audit_out(entry: audit.AdminAudit) -> AuditOut:
    return AuditOut(
        id=entry.id,
        created_at=entry.created_at,
        admin_id=entry.admin_id,
        action=entry.action,
        target_user_id=entry.target_user_id,
        reason=entry.reason,
        ledger_id=entry.ledger_id,
    )


async def _user_or_404(session: SessionDep, user_id: int) -> User:
    user = await session.get(User, user_id)
    if user is None:
        raise ApiError(404, "user_not_found", f"There is no user {user_id}.")
    return user


@router.get(
    "/users/{user_id}",
    response_model=UserDetailOut,
    summary="One user: subscription, balance split, ledger with reasons, usage, purchases, audit",
    responses=errors(*AUTHED, 404),
)
async def user_detail(
    user_id: UserId, _admin: AdminUser, session: SessionDep, now: ClockDep, limit: Limit = 50
) -> UserDetailOut:
    user = await _user_or_404(session, user_id)
    has_account = await session.scalar(select(UserSubscription.id).where(UserSubscription.user_id == user_id))
    sub = await billing.get_account(session, user_id=user_id, now=now) if has_account else None
    ledger: list[CreditLedger] = []
    if sub is not None:
        ledger = list(
            (
                await session.execute(
                    select(CreditLedger)
                    .where(CreditLedger.subscription_id == sub.id)
                    .order_by(CreditLedger.id.desc())
                    .limit(limit)
                )
            ).scalars()
        )
    usage = (
        await session.execute(
            select(UsageLog).where(UsageLog.user_id == user_id).order_by(UsageLog.id.desc()).limit(limit)
        )
    ).scalars()
    purchases = (
        await session.execute(
            select(CreditPurchase)
            .where(CreditPurchase.user_id == user_id)
            .order_by(CreditPurchase.id.desc())
            .limit(limit)
        )
    ).scalars()
    return UserDetailOut(
        user=_user_summary(user),
        subscription=subscription_out(sub) if sub is not None else None,
        balance=(
            BalanceOut(monthly=sub.credits_remaining, purchased=sub.purchased_credits_remaining, total=sub.balance)
            if sub is not None
            else None
        ),
        ledger=[
            LedgerEntryOut(
                id=row.id,
                created_at=row.created_at,
                kind=row.kind,
                monthly_delta=row.monthly_delta,
                purchased_delta=row.purchased_delta,
                balance_after=row.monthly_balance_after + row.purchased_balance_after,
                reason=row.reason,
                admin_id=row.admin_id,
            )
            for row in ledger
        ],
        usage=[usage_log_out(log) for log in usage],
        purchases=[purchase_out(p) for p in purchases],
        audit=[_audit_out(e) for e in await audit.entries(session, target_user_id=user_id, limit=limit)],
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
    responses=errors(*AUTHED, 402, 404),
)
async def adjust_credits(
    user_id: UserId,
    body: AdjustIn,
    admin: AdminUser,
    session: SessionDep,
    now: ClockDep,
    idempotency_key: IdempotencyKeyDep,
) -> AdjustOut:
    await _user_or_404(session, user_id)
    if not body.reason.strip():
        raise ApiError(400, "invalid_request", "An adjustment needs a reason.")
    result = await billing.adjust(
        session,
        user_id=user_id,
        amount=body.amount,
        reason=body.reason,
        admin_id=admin.id,
        now=now,
        idempotency_key=f"admin:{idempotency_key}" if idempotency_key else None,
    )
    entry = None
    if not result.replayed:
        entry = await audit.record(
            session,
            admin_id=admin.id,
            action=audit.AdminAction.ADJUST_CREDITS,
            target_user_id=user_id,
            reason=body.reason.strip(),
            now=now,
            ledger_id=result.ledger_id,
            details={"amount": body.amount},
        )
    balance = result.balance
    return AdjustOut(
        ledger_id=result.ledger_id,
        audit_id=entry.id if entry is not None else None,
        balance=BalanceOut(monthly=balance.monthly, purchased=balance.purchased, total=balance.total),
    )


class SuspendIn(Strict):
    reason: Reason


class SuspensionOut(BaseModel):
    user: UserSummaryOut
    audit_id: int


async def _set_suspended(
    session: SessionDep, admin: User, user_id: int, *, suspended: bool, reason: str, now: datetime
) -> SuspensionOut:
    if user_id == admin.id:
        raise ApiError(400, "invalid_request", "You cannot suspend or restore your own account.")
    user = await _user_or_404(session, user_id)
    user.is_suspended = suspended
    entry = await audit.record(
        session,
        admin_id=admin.id,
        action=audit.AdminAction.SUSPEND if suspended else audit.AdminAction.RESTORE,
        target_user_id=user_id,
        reason=reason.strip(),
        now=now,
    )
    return SuspensionOut(user=_user_summary(user), audit_id=entry.id)


@router.post(
    "/users/{user_id}/suspend",
    response_model=SuspensionOut,
    summary="Suspend an account: it can no longer sign in or use the API",
    responses=errors(*AUTHED, 404),
)
async def suspend(
    user_id: UserId, body: SuspendIn, admin: AdminUser, session: SessionDep, now: ClockDep
) -> SuspensionOut:
    return await _set_suspended(session, admin, user_id, suspended=True, reason=body.reason, now=now)


@router.post(
    "/users/{user_id}/restore",
    response_model=SuspensionOut,
    summary="Restore a suspended account",
    responses=errors(*AUTHED, 404),
)
async def restore(
    user_id: UserId, body: SuspendIn, admin: AdminUser, session: SessionDep, now: ClockDep
) -> SuspensionOut:
    return await _set_suspended(session, admin, user_id, suspended=False, reason=body.reason, now=now)


class AuditListOut(BaseModel):
    entries: list[AuditOut]


@router.get("/audit", response_model=AuditListOut, summary="The newest admin actions", responses=ADMIN_ERRORS)
async def audit_log(_admin: AdminUser, session: SessionDep, limit: Limit = 50) -> AuditListOut:
    return AuditListOut(entries=[_audit_out(e) for e in await audit.entries(session, limit=limit)])


# --- the books audit ------------------------------------------------------------------


class DiscrepancyOut(BaseModel):
    check: str
    account: str
    detail: str


class BooksRunOut(BaseModel):
    ok: bool
    started_at: Timestamp
    finished_at: Timestamp
    accounts: int
    discrepancies: int
    checks: dict[str, int] = Field(description="Discrepancies found by each check (0: it held).")
    examples: list[DiscrepancyOut] = Field(description="The first discrepancies found.")


class BooksOut(BaseModel):
    last_run: BooksRunOut | None = Field(description="The newest `devops-agent audit` run; null when it never ran.")


@router.get(
    "/books",
    response_model=BooksOut,
    summary="The last books audit (`devops-agent audit`): when, and whether the books held",
    responses=ADMIN_ERRORS,
)
async def books_audit(_admin: AdminUser, session: SessionDep) -> BooksOut:
    run = await books.last_run(session)
    if run is None:
        return BooksOut(last_run=None)
    return BooksOut(
        last_run=BooksRunOut(
            ok=run.ok,
            started_at=run.started_at,
            finished_at=run.finished_at,
            accounts=run.accounts,
            discrepancies=run.discrepancies,
            checks=run.checks,
            examples=[DiscrepancyOut.model_validate(e) for e in run.examples],
        )
    )


# --- emails ---------------------------------------------------------------------------


class EmailOut(BaseModel):
    id: int
    user_id: int | None = Field(description="The user it concerns; null for an invitation to an address.")
    to: str
    cause: str
    subject: str
    body: str
    status: str
    attempts: int
    last_error: str | None
    created_at: Timestamp
    sent_at: Timestamp | None


class EmailsOut(BaseModel):
    emails: list[EmailOut]
    smtp_configured: bool


@router.get(
    "/emails",
    response_model=EmailsOut,
    summary="The email outbox: what was sent, logged or is failing",
    responses=ADMIN_ERRORS,
)
async def emails(_admin: AdminUser, session: SessionDep, db: DatabaseDep, limit: Limit = 50) -> EmailsOut:
    rows = await recent_outbox(session, limit=limit)
    return EmailsOut(
        emails=[
            EmailOut(
                id=r.id,
                user_id=r.user_id,
                to=r.to_address,
                cause=r.cause,
                subject=r.subject,
                body=r.body,
                status=r.status,
                attempts=r.attempts,
                last_error=r.last_error,
                created_at=r.created_at,
                sent_at=r.sent_at,
            )
            for r in rows
        ],
        smtp_configured=notifier_for(db).smtp is not None,
    )


# --- the page -------------------------------------------------------------------------


@page_router.get("/admin")
async def admin_page(request: Request, user: OptionalUser) -> Response:
    """The dashboard (``templates/admin.html``); its script reads everything from the API above."""
    if user is None:
        return RedirectResponse("/login?next=/admin", status_code=303)
    if not user.is_admin:
        return render_page(
            request,
            "error.html",
            user=user,
            status_code=403,
            title="Administrators only",
            message="This page is for the people who run DevOps Agent.",
        )
    return render_page(request, "admin.html", user=user, page="admin")
