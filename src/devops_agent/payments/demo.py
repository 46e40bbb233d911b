"""Demo payments: no money changes hands, and every change takes effect at once.

This is the default when Stripe is not configured, so a fresh checkout is a
working product: a pack purchase is recorded in ``credit_purchases`` as completed
with its list price and its credits granted; an upgrade starts the new tier now.
Everything goes through the ``billing`` verbs in one transaction per operation.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from devops_agent import billing
from devops_agent.billing import plan_preview
from devops_agent.billing.catalog import PackSpec
from devops_agent.billing.models import SubscriptionTier, User
from devops_agent.billing.plan_preview import PlanPreview
from devops_agent.db import Database
from devops_agent.payments.gateway import GatewayMode, PackPurchaseResult, PlanChangeResult


class DemoGateway:
    """A ``PaymentGateway`` that takes no money (``org_id``: for an organization's pool)."""

    mode: GatewayMode = "demo"

    async def purchase_pack(
        self,
        db: Database,
        *,
        user: User,
        pack: PackSpec,
        idempotency_key: str | None,
        now: datetime,
        org_id: int | None = None,
    ) -> PackPurchaseResult:
        key = billing.request_key(user.id, idempotency_key, org_id=org_id)
        async with db.transaction() as session:
            # The balance we answer is current.
            await billing.apply_due_reset(session, user_id=user.id, now=now, org_id=org_id)
            # A retry of a request whose purchase committed before a crash answers that purchase.
            purchase = await billing.purchase_for_request(session, key, now=now) or await billing.create_purchase(
                session,
                user_id=user.id,
                org_id=org_id,
                credits_amount=pack.credits,
                price_paid=pack.price,
                now=now,
                request_key=key,
            )
            # grant_purchase re-reads the row with populate_existing: ``purchase`` is current after it.
            result = await billing.grant_purchase(session, purchase_id=purchase.id, now=now)
        return PackPurchaseResult(purchase=purchase, credits_remaining=result.balance.total)

    async def change_plan(
        self,
        db: Database,
        *,
        user: User,
        tier: SubscriptionTier,
        idempotency_key: str | None,
        now: datetime,
        org_id: int | None = None,
    ) -> PlanChangeResult:
        return await _plan_change(
            db,
            lambda session: billing.change_tier(
                session,
                user_id=user.id,
                tier_id=tier.id,
                now=now,
                org_id=org_id,
                request_key=billing.request_key(user.id, idempotency_key, org_id=org_id),
            ),
            user=user,
            now=now,
            org_id=org_id,
        )

    async def cancel_plan(
        self, db: Database, *, user: User, now: datetime, org_id: int | None = None
    ) -> PlanChangeResult:
        return await _plan_change(
            db,
            lambda session: billing.cancel(session, user_id=user.id, now=now, org_id=org_id),
            user=user,
            now=now,
            org_id=org_id,
        )

    async def preview_plan(self, db: Database, *, user: User, tier: SubscriptionTier, now: datetime) -> PlanPreview:
        """The change's rules alone: an upgrade's price is due now, in full (a new period starts)."""
        async with db.transaction() as session:
            return await plan_preview.preview_change(session, user_id=user.id, tier_id=tier.id, now=now)


async def _plan_change(
    db: Database,
    change: Callable[[AsyncSession], Awaitable[billing.TierChange]],
    *,
    user: User,
    now: datetime,
    org_id: int | None,
) -> PlanChangeResult:
    """Make ``change`` in one transaction and answer the account after it, with the change's sentence."""
    async with db.transaction() as session:
        done = await change(session)
        sub = await billing.get_account(session, user_id=user.id, now=now, org_id=org_id)
    return PlanChangeResult(subscription=sub, message=done.message)
