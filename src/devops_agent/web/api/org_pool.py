"""An organization's pool over HTTP: its subscription, packs and usage.

The routes (``/api/orgs/{id}/subscription``, ``/credits/purchase``, ``/usage/stats``,
``/usage/history``) are the personal ones for another account that pays: each checks
the caller's role in the organization, then calls the personal implementation
(``web.api.subscription``, ``web.api.credits``, ``billing.usage``) with ``org_id``. So a
team's purchase goes through the same gateway, is counted and emails the same receipt
as a personal one. Members see the pool; only the owner pays; admins and the owner see
every member's usage, members their own.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from devops_agent.billing import orgs, usage
from devops_agent.web.api import PageLimit, PageOffset, errors
from devops_agent.web.api.credits import buy_pack
from devops_agent.web.api.orgs import MEMBER_ROUTE, OrgId, as_owner
from devops_agent.web.api.subscription import cancel_plan, change_plan, subscription_envelope
from devops_agent.web.api.usage import stats_out
from devops_agent.web.deps import CurrentUser, GatewayDep, IdempotencyKeyDep, NowDep, PaymentDep, SessionDep
from devops_agent.web.schemas import (
    CancelOut,
    CheckoutOut,
    PlanChangedOut,
    PurchaseCompletedOut,
    PurchaseIn,
    SubscriptionEnvelope,
    ToolCount,
    UpgradeIn,
    UsageLogOut,
    UsageStatsOut,
)

router = APIRouter(prefix="/api/orgs", tags=["organizations"])


class OrgUsageLogOut(UsageLogOut):
    user_id: int
    username: str


class OrgUsageHistoryOut(BaseModel):
    logs: list[OrgUsageLogOut]
    total: int
    limit: int
    offset: int


class MemberUsageOut(BaseModel):
    user_id: int
    username: str
    credits_used: int
    cap: int | None
    tool_usage_breakdown: list[ToolCount]


class OrgUsageStatsOut(UsageStatsOut):
    tool_usage_breakdown: list[ToolCount] = Field(description="Admins: the whole pool's; members: their own.")
    members: list[MemberUsageOut] = Field(description="Admins: every member; members: themself.")


@router.get(
    "/{org_id}/subscription",
    response_model=SubscriptionEnvelope,
    summary="The organization's plan and pool, with the tiers it can move to",
    responses=errors(*MEMBER_ROUTE),
)
async def get_subscription(
    org_id: OrgId, request: Request, user: CurrentUser, session: SessionDep, now: NowDep, gateway: GatewayDep
) -> SubscriptionEnvelope:
    await orgs.membership(session, org_id=org_id, user_id=user.id)
    return await subscription_envelope(request, session, user_id=None, org_id=org_id, now=now, gateway=gateway)


@router.post(
    "/{org_id}/subscription/upgrade",
    response_model=PlanChangedOut | CheckoutOut,
    summary="Move the organization to another tier: at once (demo) or through Stripe Checkout (owner)",
    responses=errors(*MEMBER_ROUTE, 409, 502),
)
async def upgrade(org_id: OrgId, body: UpgradeIn, pay: PaymentDep, idempotency_key: IdempotencyKeyDep) -> JSONResponse:
    await as_owner(pay.db, org_id, pay.user)
    return await change_plan(body, pay, idempotency_key=idempotency_key, org_id=org_id)


@router.post(
    "/{org_id}/subscription/cancel",
    response_model=CancelOut,
    summary="Move the organization back to Free when the period ends (owner)",
    responses=errors(*MEMBER_ROUTE, 502),
)
async def cancel(org_id: OrgId, pay: PaymentDep) -> CancelOut:
    await as_owner(pay.db, org_id, pay.user)
    return await cancel_plan(pay, org_id=org_id)


@router.post(
    "/{org_id}/credits/purchase",
    response_model=PurchaseCompletedOut | CheckoutOut,
    summary="Buy a credit pack for the organization's pool: at once (demo) or a checkout URL (Stripe) (owner)",
    responses=errors(*MEMBER_ROUTE, 409, 502),
)
async def purchase(
    org_id: OrgId, body: PurchaseIn, pay: PaymentDep, idempotency_key: IdempotencyKeyDep
) -> JSONResponse:
    await as_owner(pay.db, org_id, pay.user)
    return await buy_pack(body, pay, idempotency_key=idempotency_key, org_id=org_id)


@router.get(
    "/{org_id}/usage/stats",
    response_model=OrgUsageStatsOut,
    summary="The pool's balance and usage; per member and per tool for admins, your own for members",
    responses=errors(*MEMBER_ROUTE),
)
async def usage_stats(org_id: OrgId, user: CurrentUser, session: SessionDep, now: NowDep) -> OrgUsageStatsOut:
    found = await usage.stats(session, user_id=user.id, org_id=org_id, now=now)
    return OrgUsageStatsOut(
        **stats_out(found).model_dump(),
        members=[
            MemberUsageOut(
                user_id=m.member.user_id,
                username=m.member.username,
                credits_used=m.member.credits_used,
                cap=m.member.effective_cap,
                tool_usage_breakdown=[ToolCount.model_validate(t) for t in m.tools],
            )
            for m in found.members
        ],
    )


@router.get(
    "/{org_id}/usage/history",
    response_model=OrgUsageHistoryOut,
    summary="Actions paid from the pool, newest first: everyone's for admins, your own for members",
    responses=errors(*MEMBER_ROUTE),
)
async def usage_history(
    org_id: OrgId,
    user: CurrentUser,
    session: SessionDep,
    now: NowDep,
    limit: PageLimit = 50,
    offset: PageOffset = 0,
) -> OrgUsageHistoryOut:
    page = await usage.history(session, user_id=user.id, org_id=org_id, now=now, limit=limit, offset=offset)
    logs = [
        OrgUsageLogOut(**UsageLogOut.model_validate(e.log).model_dump(), user_id=e.log.user_id, username=e.username)
        for e in page.entries
    ]
    return OrgUsageHistoryOut(logs=logs, total=page.total, limit=limit, offset=offset)
