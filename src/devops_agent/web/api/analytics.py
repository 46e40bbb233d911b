"""A customer's own analytics, exports and email preferences.

Each report is a plan feature (an entitlement of the pricing catalog), refused
with 403 ``feature_not_in_plan`` (naming the tiers that have it) otherwise:

* ``GET /api/analytics/usage``: credits spent per day and per tool over a window,
  by default the current billing period up to today (``usage_analytics``, Starter up);
* ``GET /api/analytics/usage.csv``: the usage history as CSV (``advanced_analytics``);
* ``GET /api/analytics/statement[.csv]?month=YYYY-MM``: the month's ledger entries
  between its opening and closing balances (``compliance_reports``, Business).

``/api/account/email-preferences`` turns the optional emails (low credits, out of
credits) off and on; receipts and payment failures are always sent.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import BaseModel
from sqlalchemy import select

from devops_agent.billing import analytics
from devops_agent.billing.models import User, UserSubscription
from devops_agent.web.api import AUTHED, errors
from devops_agent.web.deps import CurrentUser, NowDep, SessionDep, require_feature
from devops_agent.web.errors import ApiError
from devops_agent.web.schemas import DayOut, FromAttributes, Strict, Timestamp

router = APIRouter(tags=["analytics"])
GATED = errors(*AUTHED)
MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
MAX_WINDOW_DAYS = 366

FIRST_DAY, LAST_DAY = date(2000, 1, 1), date(2999, 12, 30)
DateParam = Annotated[date | None, Query(description="A UTC day, YYYY-MM-DD (2000-01-01 to 2999-12-30).")]
MonthParam = Annotated[str | None, Query(description="A UTC month, YYYY-MM; this month by default.")]


def _midnight(day: date) -> datetime:
    if not FIRST_DAY <= day <= LAST_DAY:
        raise ApiError(400, "invalid_request", f"Days must be between {FIRST_DAY} and {LAST_DAY}.")
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


async def _window(
    session: SessionDep, user_id: int, now: datetime, start: date | None, end: date | None
) -> tuple[datetime, datetime]:
    """``[start, end]`` as whole UTC days; by default the billing period so far (today included)."""
    today_end = _midnight(now.date()) + timedelta(days=1)
    if start is None:
        period_start = await session.scalar(
            select(UserSubscription.current_period_start).where(UserSubscription.user_id == user_id)
        )
        begin = _midnight((period_start or now).date())
    else:
        begin = _midnight(start)
    finish = _midnight(end) + timedelta(days=1) if end is not None else max(today_end, begin + timedelta(days=1))
    if finish <= begin:
        raise ApiError(400, "invalid_request", "The end day must not be before the start day.")
    if finish - begin > timedelta(days=MAX_WINDOW_DAYS):
        raise ApiError(400, "invalid_request", f"Ask for at most {MAX_WINDOW_DAYS} days at a time.")
    return begin, finish


class CustomerToolOut(BaseModel):
    tool: str
    count: int
    credits_used: int
    failures: int


class CustomerUsageOut(BaseModel):
    start: Timestamp
    end: Timestamp
    total_credits: int
    per_day: list[DayOut]
    by_tool: list[CustomerToolOut]


@router.get(
    "/api/analytics/usage",
    response_model=CustomerUsageOut,
    summary="Your credits per day and per tool (plan feature usage_analytics)",
    responses=GATED,
    dependencies=[require_feature("usage_analytics")],
)
async def usage(
    user: CurrentUser, session: SessionDep, now: NowDep, start: DateParam = None, end: DateParam = None
) -> CustomerUsageOut:
    begin, finish = await _window(session, user.id, now, start, end)
    report = await analytics.customer_usage(session, user_id=user.id, start=begin, end=finish)
    return CustomerUsageOut(
        start=report.start,
        end=report.end,
        total_credits=report.total_credits,
        per_day=[DayOut(day=d.day.isoformat(), credits=d.credits) for d in report.per_day],
        by_tool=[
            CustomerToolOut(tool=t.name, count=t.count, credits_used=t.credits_used, failures=t.failures)
            for t in report.by_tool
        ],
    )


def _csv(body: str, filename: str) -> Response:
    return Response(
        body,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.get(
    "/api/analytics/usage.csv",
    summary="Your usage history as CSV (plan feature advanced_analytics)",
    responses={200: {"content": {"text/csv": {}}, "description": "One row per action."}, **GATED},
    response_class=Response,
    dependencies=[require_feature("advanced_analytics")],
)
async def usage_csv(user: CurrentUser, session: SessionDep, start: DateParam = None, end: DateParam = None) -> Response:
    begin = _midnight(start) if start else None
    finish = _midnight(end) + timedelta(days=1) if end else None
    body = await analytics.usage_history_csv(session, user_id=user.id, start=begin, end=finish)
    return _csv(body, f"usage-history-{user.username}.csv")


def _month(value: str | None, now: datetime) -> tuple[int, int]:
    if value is None:
        return now.year, now.month
    match = MONTH.match(value)
    if match is None or not 2000 <= int(match.group(1)) <= 2999:
        raise ApiError(400, "invalid_request", "month must look like 2026-01 (years 2000 to 2999).")
    return int(match.group(1)), int(match.group(2))


class StatementEntryOut(FromAttributes):
    id: int
    created_at: Timestamp
    kind: str
    reason: str | None
    monthly_delta: int
    purchased_delta: int
    delta: int
    balance_after: int


class StatementOut(FromAttributes):
    month: str
    opening_balance: int
    closing_balance: int
    totals_by_kind: dict[str, int]
    entries: list[StatementEntryOut]


@router.get(
    "/api/analytics/statement",
    response_model=StatementOut,
    summary="Your monthly statement of ledger entries (plan feature compliance_reports)",
    responses=GATED,
    dependencies=[require_feature("compliance_reports")],
)
async def statement(user: CurrentUser, session: SessionDep, now: NowDep, month: MonthParam = None) -> StatementOut:
    year, number = _month(month, now)
    result = await analytics.monthly_statement(session, user_id=user.id, year=year, month=number)
    return StatementOut.model_validate(result)


@router.get(
    "/api/analytics/statement.csv",
    summary="Your monthly statement as CSV (plan feature compliance_reports)",
    responses={200: {"content": {"text/csv": {}}, "description": "Opening, entries, closing."}, **GATED},
    response_class=Response,
    dependencies=[require_feature("compliance_reports")],
)
async def statement_csv(user: CurrentUser, session: SessionDep, now: NowDep, month: MonthParam = None) -> Response:
    year, number = _month(month, now)
    result = await analytics.monthly_statement(session, user_id=user.id, year=year, month=number)
    return _csv(analytics.statement_csv(result), f"statement-{result.month}.csv")


class EmailPreferencesOut(BaseModel):
    low_credit_emails: bool
    always_sent: list[str] = ["purchase receipts", "failed payments"]


class EmailPreferencesIn(Strict):
    low_credit_emails: bool


@router.get(
    "/api/account/email-preferences",
    response_model=EmailPreferencesOut,
    summary="Whether you get the optional low-credit emails",
    responses=errors(*AUTHED),
)
async def email_preferences(user: CurrentUser) -> EmailPreferencesOut:
    return EmailPreferencesOut(low_credit_emails=not user.email_opt_out)


@router.put(
    "/api/account/email-preferences",
    response_model=EmailPreferencesOut,
    summary="Turn the optional low-credit emails off or on",
    responses=errors(*AUTHED),
)
async def set_email_preferences(
    body: EmailPreferencesIn, user: CurrentUser, session: SessionDep
) -> EmailPreferencesOut:
    row = await session.get(User, user.id)
    assert row is not None  # the user was authenticated a moment ago
    row.email_opt_out = not body.low_credit_emails
    return EmailPreferencesOut(low_credit_emails=body.low_credit_emails)
