"""The payment gateway interface the endpoints call, and the factory that picks one.

Endpoints never know whether money is taken: they call a ``PaymentGateway``.
Demo mode (``payments.demo``, the default) completes a purchase or an upgrade at
once without money; Stripe mode answers with a checkout URL and the change happens
when Stripe's webhook confirms the payment.

Methods take the ``Database``, not a session: a gateway that talks to the network
(Stripe) must do so OUTSIDE any database transaction, and opens its own short
transactions before and after the call.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol, runtime_checkable

from devops_agent.billing.catalog import PackSpec
from devops_agent.billing.models import CreditPurchase, SubscriptionTier, User, UserSubscription
from devops_agent.billing.plan_preview import PlanPreview
from devops_agent.config import Settings
from devops_agent.db import Database

GatewayMode = Literal["demo", "stripe"]


@dataclass(frozen=True)
class PackPurchaseResult:
    """Either a completed purchase with the new total balance (demo), or where to pay (Stripe)."""

    purchase: CreditPurchase | None = None
    credits_remaining: int | None = None
    checkout_url: str | None = None


@dataclass(frozen=True)
class PlanChangeResult:
    """Either the account after the change with a sentence about it (demo), or where to pay (Stripe).

    ``subscription`` has ``tier`` and ``scheduled_tier`` loaded (from ``billing.get_account``).
    """

    subscription: UserSubscription | None = None
    message: str | None = None
    checkout_url: str | None = None


@runtime_checkable
class PaymentGateway(Protocol):
    """What the subscription and credits endpoints need from a payment provider.

    Every method pays for one account: the user's own, or with ``org_id`` the
    organization's pool, which ``user`` (its owner; the caller checks the role) pays for.
    """

    mode: GatewayMode

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
        """Sell ``pack`` to ``user`` (for the pool of ``org_id``); raise ``billing.errors`` exceptions on refusal."""
        ...

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
        """Move the account to ``tier`` (upgrade now, downgrade at period end)."""
        ...

    async def cancel_plan(
        self, db: Database, *, user: User, now: datetime, org_id: int | None = None
    ) -> PlanChangeResult:
        """Return the account to Free at the end of the period."""
        ...

    async def preview_plan(self, db: Database, *, user: User, tier: SubscriptionTier, now: datetime) -> PlanPreview:
        """What ``change_plan`` to ``tier`` would cost now and do to the credits; changes nothing."""
        ...


def get_gateway(settings: Settings) -> PaymentGateway:
    """The gateway for these settings: Stripe when ``STRIPE_SECRET_KEY`` is set, else demo.

    ``payments.demo`` and ``payments.stripe_gateway`` import this module (for the
    result types), so they are imported here, inside the function, not at the top.
    """
    from devops_agent.payments.demo import DemoGateway

    if settings.stripe_secret_key:
        from devops_agent.payments.stripe_gateway import StripeGateway

        return StripeGateway(settings)
    return DemoGateway()
