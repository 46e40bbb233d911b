"""Usage analytics (``/api/usage``): totals with a per-tool breakdown, and the paginated log.

The queries are ``billing.usage``'s; a team's pool answers the same shapes, with its
members, through ``stats_out`` and ``usage_log_out`` (``web.api.org_pool``).
"""

from __future__ import annotations

from fastapi import APIRouter

from devops_agent.billing import usage
from devops_agent.web.api import AUTHED, PageLimit, PageOffset, errors
from devops_agent.web.deps import CurrentUser, NowDep, SessionDep
from devops_agent.web.schemas import TierOut, ToolCount, UsageHistoryOut, UsageLogOut, UsageStatsOut

router = APIRouter(prefix="/api/usage", tags=["usage"])


def stats_out(stats: usage.UsageStats) -> UsageStatsOut:
    """An account's balance and use as the contract shows it (a user's, or a pool's)."""
    account = stats.account
    return UsageStatsOut(
        credits_remaining=account.balance,
        credits_used_this_month=account.credits_used_this_month,
        total_credits_used=account.total_credits_used,
        tier=TierOut.model_validate(account.tier),
        tool_usage_breakdown=[ToolCount.model_validate(t) for t in stats.tools],
    )


@router.get(
    "/stats",
    response_model=UsageStatsOut,
    summary="Your balance and usage, with actions per tool (most used first)",
    responses=errors(*AUTHED),
)
async def stats(user: CurrentUser, session: SessionDep, now: NowDep) -> UsageStatsOut:
    return stats_out(await usage.stats(session, user_id=user.id, now=now))


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
    page = await usage.history(session, user_id=user.id, now=now, limit=limit, offset=offset)
    logs = [UsageLogOut.model_validate(entry.log) for entry in page.entries]
    return UsageHistoryOut(logs=logs, total=page.total, limit=limit, offset=offset)
