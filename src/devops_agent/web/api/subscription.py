"""The seed's subscription endpoints: current plan, tiers, upgrade, cancel.

Reads go through ``billing.credits.get_account``, which applies a due monthly reset
first. Changes go through the payment gateway (demo: at once; Stripe: a checkout URL).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from devops_agent.billing import credits
from devops_agent.billing.models import SubscriptionTier
from devops_agent.payments.gateway import PlanChangeResult
from devops_agent.web.api import AUTHED, errors
from devops_agent.web.deps import (
    ClockDep,
    CurrentUser,
    DatabaseDep,
    GatewayDep,
    IdempotencyKeyDep,
    SessionDep,
)
from devops_agent.web.idempotency import fingerprint, run_idempotent
from devops_agent.web.schemas import (
    CancelOut,
    CheckoutOut,
    PlanChangedOut,
    SubscriptionEnvelope,
    TierOut,
    TiersOut,
    UpgradeIn,
    subscription_out,
    tier_out,
)

router = APIRouter(prefix="/api/subscription", tags=["subscription"])


async def active_tiers(session: AsyncSession) -> list[TierOut]:
    """Active tiers, cheapest first."""
    tiers = (
        await session.execute(
            select(SubscriptionTier)
            .where(SubscriptionTier.is_active.is_(True))
            .order_by(SubscriptionTier.monthly_price, SubscriptionTier.monthly_credits, SubscriptionTier.id)
        )
    ).scalars()
    return [tier_out(t) for t in tiers]


@router.get(
    "",
    response_model=SubscriptionEnvelope,
    summary="Your plan, balances and period, with the tiers you can move to",
    responses=errors(*AUTHED),
)
async def get_subscription(
    user: CurrentUser, session: SessionDep, now: ClockDep, gateway: GatewayDep
) -> SubscriptionEnvelope:
    sub = await credits.get_account(session, user_id=user.id, now=now)
    return SubscriptionEnvelope(
        subscription=subscription_out(sub), available_tiers=await active_tiers(session), payments_mode=gateway.mode
    )


@router.get("/tiers", response_model=TiersOut, summary="Active tiers, cheapest first (public)")
async def list_tiers(request: Request, session: SessionDep, gateway: GatewayDep) -> TiersOut:
    return TiersOut(tiers=await active_tiers(session), payments_mode=gateway.mode)


def _plan_body(result: PlanChangeResult) -> dict[str, Any]:
    if result.checkout_url is not None:
        return CheckoutOut(checkout_url=result.checkout_url).model_dump(mode="json")
    assert result.subscription is not None
    return PlanChangedOut(subscription=subscription_out(result.subscription), message=result.message or "").model_dump(
        mode="json"
    )


@router.post(
    "/upgrade",
    response_model=PlanChangedOut | CheckoutOut,
    summary="Move to another tier: dearer at once, cheaper at the period's end (demo); or a checkout URL (Stripe)",
    responses=errors(*AUTHED, 404, 409),
)
async def upgrade(
    body: UpgradeIn,
    request: Request,
    user: CurrentUser,
    db: DatabaseDep,
    now: ClockDep,
    gateway: GatewayDep,
    idempotency_key: IdempotencyKeyDep,
) -> JSONResponse:
    async def work() -> tuple[int, dict[str, Any]]:
        async with db.transaction() as session:
            tier = await credits.tier_by_id(session, body.tier_id, active_only=True)
        result = await gateway.change_plan(db, user=user, tier=tier, idempotency_key=idempotency_key, now=now)
        return 200, _plan_body(result)

    return await run_idempotent(
        db,
        user_id=user.id,
        key=idempotency_key,
        digest=fingerprint("POST", request.url.path, body.model_dump()),
        now=now,
        work=work,
    )


@router.post(
    "/cancel",
    response_model=CancelOut,
    summary="Go back to Free when the period ends",
    responses=errors(*AUTHED),
)
async def cancel(user: CurrentUser, db: DatabaseDep, now: ClockDep, gateway: GatewayDep) -> CancelOut:
    result = await gateway.cancel_plan(db, user=user, now=now)
    assert result.subscription is not None
    return CancelOut(subscription=subscription_out(result.subscription), message=result.message or "")
