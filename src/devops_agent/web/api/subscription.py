"""The subscription endpoints (``/api/subscription``): current plan, tiers, upgrade, cancel.

Reads go through ``billing.get_account``, which applies a due monthly reset
first. Changes go through the payment gateway (demo: at once; Stripe: a checkout URL).
A team's pool is read and changed by the same functions with ``org_id``
(``web.api.org_pool``), after its own role check.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from devops_agent import billing
from devops_agent.billing.catalog import Catalog
from devops_agent.billing.models import SubscriptionTier
from devops_agent.db import Database
from devops_agent.payments.gateway import PaymentGateway, PlanChangeResult
from devops_agent.web.api import AUTHED, errors
from devops_agent.web.deps import (
    CurrentUser,
    DatabaseDep,
    GatewayDep,
    IdempotencyKeyDep,
    NowDep,
    PaymentContext,
    PaymentDep,
    SessionDep,
)
from devops_agent.web.idempotency import run_idempotent_post
from devops_agent.web.schemas import (
    USD,
    CancelOut,
    CheckoutOut,
    FromAttributes,
    PaymentsMode,
    PlanChangedOut,
    SubscriptionEnvelope,
    TierOut,
    Timestamp,
    UpgradeIn,
    subscription_out,
)

router = APIRouter(prefix="/api/subscription", tags=["subscription"])

TIERS_TTL_SECONDS = 10.0


class TierLimitsOut(FromAttributes):
    """A tier's guardrails: what the agent may create on the customer's cloud."""

    instance_types: list[str]
    rds_classes: list[str]
    rds_max_storage_gb: int
    regions: list[str]
    creates_per_month: int
    auto_approve: bool


class TierWithLimitsOut(TierOut):
    limits: TierLimitsOut | None


class TiersOut(BaseModel):
    tiers: list[TierWithLimitsOut]
    payments_mode: PaymentsMode


class PlanPreviewOut(FromAttributes):
    """What a move to another tier would do, before it is made."""

    amount_due_now: USD
    currency: str
    credits_after: int = Field(description="Your balance once the change takes effect (monthly + purchased).")
    monthly_credits_lost: int = Field(description="Monthly credits left now that the change replaces.")
    effective_at: Timestamp
    next_renewal: Timestamp


async def active_tiers(session: AsyncSession) -> list[TierOut]:
    """Active tiers, cheapest first."""
    tiers = (
        await session.execute(
            select(SubscriptionTier)
            .where(SubscriptionTier.is_active.is_(True))
            .order_by(SubscriptionTier.monthly_price, SubscriptionTier.monthly_credits, SubscriptionTier.id)
        )
    ).scalars()
    return [TierOut.model_validate(t) for t in tiers]


@router.get(
    "",
    response_model=SubscriptionEnvelope,
    summary="Your plan, balances and period, with the tiers you can move to",
    responses=errors(*AUTHED),
)
async def get_subscription(
    request: Request, user: CurrentUser, session: SessionDep, now: NowDep, gateway: GatewayDep
) -> SubscriptionEnvelope:
    return await subscription_envelope(request, session, user_id=user.id, now=now, gateway=gateway)


async def subscription_envelope(
    request: Request,
    session: AsyncSession,
    *,
    user_id: int | None,
    now: datetime,
    gateway: PaymentGateway,
    org_id: int | None = None,
) -> SubscriptionEnvelope:
    """The account's plan (the user's, or the pool of ``org_id``) with the tiers it can move to."""
    sub = await billing.get_account(session, user_id=user_id, org_id=org_id, now=now)
    cache: TierCache = request.app.state.tier_cache
    tiers = await cache.get(session)
    return SubscriptionEnvelope(subscription=subscription_out(sub), available_tiers=tiers, payments_mode=gateway.mode)


class TierCache:
    """The active tiers, kept in the process for ``ttl`` seconds.

    The public tier list is the most-read page of a pricing site and changes only when
    the catalog is synced (``devops-agent init``), so it is served from memory: at most
    one query per worker every ``ttl`` seconds. A sync shows within ``ttl`` seconds.
    """

    def __init__(self, ttl: float = TIERS_TTL_SECONDS) -> None:
        self.ttl = ttl
        self._tiers: list[TierOut] | None = None
        self._loaded_at = 0.0

    async def get(self, source: Database | AsyncSession) -> list[TierOut]:
        """The cached tiers; reloaded through ``source`` (an open session, or the database) when stale."""
        if self._tiers is None or time.monotonic() - self._loaded_at >= self.ttl:
            if isinstance(source, AsyncSession):
                tiers = await active_tiers(source)
            else:
                async with source.transaction(write=False) as session:
                    tiers = await active_tiers(session)
            self._tiers, self._loaded_at = tiers, time.monotonic()
        return self._tiers

    def clear(self) -> None:
        self._tiers = None


@router.get("/tiers", response_model=TiersOut, summary="Active tiers, cheapest first (public)")
async def list_tiers(request: Request, db: DatabaseDep, gateway: GatewayDep) -> TiersOut:
    cache: TierCache = request.app.state.tier_cache
    catalog: Catalog = request.app.state.catalog
    tiers = []
    for tier in await cache.get(db):
        spec = catalog.tier(tier.name)
        limits = TierLimitsOut.model_validate(spec.limits) if spec is not None and spec.limits else None
        tiers.append(TierWithLimitsOut(**tier.model_dump(), limits=limits))
    return TiersOut(tiers=tiers, payments_mode=gateway.mode)


def plan_body(result: PlanChangeResult) -> dict[str, Any]:
    """The answer to a plan change: a checkout URL (Stripe), or the account after it (demo)."""
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
async def upgrade(body: UpgradeIn, pay: PaymentDep, idempotency_key: IdempotencyKeyDep) -> JSONResponse:
    return await change_plan(body, pay, idempotency_key=idempotency_key)


async def change_plan(
    body: UpgradeIn, pay: PaymentContext, *, idempotency_key: str | None, org_id: int | None = None
) -> JSONResponse:
    """Move the account that pays (``pay.user``'s own, or the pool of ``org_id``) to the tier; a retried key replays."""
    db, user, now = pay.db, pay.user, pay.now

    async def work() -> tuple[int, dict[str, Any]]:
        tier = await _tier(db, body.tier_id)
        result = await pay.gateway.change_plan(
            db, user=user, tier=tier, idempotency_key=idempotency_key, now=now, org_id=org_id
        )
        return 200, plan_body(result)

    return await run_idempotent_post(db, pay.request, body, user_id=user.id, key=idempotency_key, now=now, work=work)


@router.post(
    "/preview",
    response_model=PlanPreviewOut,
    summary="What moving to a tier would cost now and do to your credits (nothing changes)",
    responses=errors(*AUTHED, 404, 502),
)
async def preview(
    body: UpgradeIn, user: CurrentUser, db: DatabaseDep, now: NowDep, gateway: GatewayDep
) -> PlanPreviewOut:
    found = await gateway.preview_plan(db, user=user, tier=await _tier(db, body.tier_id), now=now)
    return PlanPreviewOut.model_validate(found)


async def _tier(db: Database, tier_id: int) -> SubscriptionTier:
    async with db.transaction() as session:
        return await billing.tier_by_id(session, tier_id, active_only=True)


@router.post(
    "/cancel",
    response_model=CancelOut,
    summary="Go back to Free when the period ends",
    responses=errors(*AUTHED),
)
async def cancel(pay: PaymentDep) -> CancelOut:
    return await cancel_plan(pay)


async def cancel_plan(pay: PaymentContext, *, org_id: int | None = None) -> CancelOut:
    """Return the account that pays (``pay.user``'s own, or the pool of ``org_id``) to Free when the period ends."""
    result = await pay.gateway.cancel_plan(pay.db, user=pay.user, now=pay.now, org_id=org_id)
    assert result.subscription is not None
    return CancelOut(subscription=subscription_out(result.subscription), message=result.message or "")
