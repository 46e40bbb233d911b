"""Usage analytics (``/api/usage``): totals with a per-tool breakdown, and the paginated log."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import ColumnElement, func, select

from devops_agent import billing
from devops_agent.billing.models import UsageLog
from devops_agent.web.api import AUTHED, PageLimit, PageOffset, errors
from devops_agent.web.deps import ClockDep, CurrentUser, SessionDep
from devops_agent.web.schemas import ToolCount, UsageHistoryOut, UsageStatsOut, tier_out, usage_log_out

router = APIRouter(prefix="/api/usage", tags=["usage"])


def _personal(user_id: int) -> tuple[ColumnElement[bool], ...]:
    """The user's actions paid from their own account (not from an organization's pool)."""
    return (UsageLog.user_id == user_id, UsageLog.organization_id.is_(None))


@router.get(
    "/stats",
    response_model=UsageStatsOut,
    summary="Your balance and usage, with actions per tool (most used first)",
    responses=errors(*AUTHED),
)
async def stats(user: CurrentUser, session: SessionDep, now: ClockDep) -> UsageStatsOut:
    sub = await billing.get_account(session, user_id=user.id, now=now)
    tool = func.coalesce(UsageLog.tool_name, UsageLog.action_type)
    count = func.count(UsageLog.id)
    rows = await session.execute(
        select(tool, count).where(*_personal(user.id)).group_by(tool).order_by(count.desc(), tool)
    )
    return UsageStatsOut(
        credits_remaining=sub.balance,
        credits_used_this_month=sub.credits_used_this_month,
        total_credits_used=sub.total_credits_used,
        tier=tier_out(sub.tier),
        tool_usage_breakdown=[ToolCount(tool=str(name), count=int(n)) for name, n in rows],
    )


@router.get(
    "/history",
    response_model=UsageHistoryOut,
    summary="Your usage log, newest first",
    responses=errors(*AUTHED),
)
async def history(
    user: CurrentUser,
    session: SessionDep,
    now: ClockDep,
    limit: PageLimit = 50,
    offset: PageOffset = 0,
) -> UsageHistoryOut:
    await billing.apply_due_reset(session, user_id=user.id, now=now)
    total = await session.scalar(select(func.count()).select_from(UsageLog).where(*_personal(user.id)))
    logs = (
        await session.execute(
            select(UsageLog)
            .where(*_personal(user.id))
            .order_by(UsageLog.created_at.desc(), UsageLog.id.desc())
            .limit(limit)
            .offset(offset)
        )
    ).scalars()
    return UsageHistoryOut(logs=[usage_log_out(log) for log in logs], total=int(total or 0), limit=limit, offset=offset)
