"""Usage analytics (``/api/usage``): totals with a per-tool breakdown, and the paginated log."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel
from sqlalchemy import ColumnElement, func, select

from devops_agent.billing import credits
from devops_agent.billing.models import UsageLog
from devops_agent.web.api import AUTHED, PageLimit, PageOffset, errors
from devops_agent.web.deps import CurrentUser, NowDep, SessionDep
from devops_agent.web.schemas import TierOut, ToolCount, UsageLogOut

router = APIRouter(prefix="/api/usage", tags=["usage"])


class UsageStatsOut(BaseModel):
    credits_remaining: int
    credits_used_this_month: int
    total_credits_used: int
    tier: TierOut
    tool_usage_breakdown: list[ToolCount]


class UsageHistoryOut(BaseModel):
    logs: list[UsageLogOut]
    total: int
    limit: int
    offset: int


def _personal(user_id: int) -> tuple[ColumnElement[bool], ...]:
    """The user's actions paid from their own account (not from an organization's pool)."""
    return (UsageLog.user_id == user_id, UsageLog.organization_id.is_(None))


@router.get(
    "/stats",
    response_model=UsageStatsOut,
    summary="Your balance and usage, with actions per tool (most used first)",
    responses=errors(*AUTHED),
)
async def stats(user: CurrentUser, session: SessionDep, now: NowDep) -> UsageStatsOut:
    sub = await credits.get_account(session, user_id=user.id, now=now)
    tool = func.coalesce(UsageLog.tool_name, UsageLog.action_type)
    count = func.count(UsageLog.id)
    rows = await session.execute(
        select(tool, count).where(*_personal(user.id)).group_by(tool).order_by(count.desc(), tool)
    )
    return UsageStatsOut(
        credits_remaining=sub.balance,
        credits_used_this_month=sub.credits_used_this_month,
        total_credits_used=sub.total_credits_used,
        tier=TierOut.model_validate(sub.tier),
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
    now: NowDep,
    limit: PageLimit = 50,
    offset: PageOffset = 0,
) -> UsageHistoryOut:
    await credits.apply_due_reset(session, user_id=user.id, now=now)
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
    return UsageHistoryOut(
        logs=[UsageLogOut.model_validate(log) for log in logs], total=int(total or 0), limit=limit, offset=offset
    )
