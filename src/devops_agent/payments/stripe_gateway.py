"""The Stripe ``PaymentGateway``: Checkout for packs and plans, subscription changes, the Portal.

Nothing here grants credits or starts a period: the browser's return from Stripe
proves nothing. Credits and periods come only from verified webhooks
(``payments.webhooks``). What happens here, in this order and never inside a database
transaction while Stripe is called:

* a pack: a pending ``credit_purchases`` row (transaction 1), a Checkout Session in
  ``payment`` mode for our customer with ``client_reference_id`` and metadata naming
  the purchase (Stripe, idempotency key from the purchase id), the session id stored
  on the purchase (transaction 2);
* a plan without a subscription: a Checkout Session in ``subscription`` mode;
* a plan with a subscription: its price changed in place, an upgrade invoiced now
  with proration and a new billing cycle (the paid invoice starts the new period),
  a downgrade without proration from the next invoice (scheduled here as well);
* a cancellation: ``cancel_at_period_end`` on the subscription (and scheduled here).

Every flow pays for one account: a user's own, or with ``org_id`` an organization's pool.
The organization is a Stripe customer of its own (its name, its owner's email for
billing, ``org_id`` in the metadata); sessions and subscriptions carry ``org_id`` in
their metadata so that the webhooks credit the pool, and bring the owner back to the
organization's page.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

import stripe
from sqlalchemy import select, update

from devops_agent import billing
from devops_agent.billing import plan_preview
from devops_agent.billing.catalog import PackSpec
from devops_agent.billing.errors import AlreadyOnTier
from devops_agent.billing.models import CreditPurchase, PurchaseStatus, SubscriptionTier, User, UserSubscription
from devops_agent.billing.org_models import Organization
from devops_agent.billing.plan_preview import PlanPreview
from devops_agent.config import Settings
from devops_agent.db import Database
from devops_agent.payments.gateway import GatewayMode, PackPurchaseResult, PaymentGateway, PlanChangeResult

from .models import StripePrice
from .stripe_client import SEATS_KIND, PaymentProviderError, field, line_price_id, make_client, options

logger = logging.getLogger("devops_agent.payments")


def cents(amount: Decimal) -> int:
    """Whole cents of a USD amount (our prices are exact to the cent)."""
    return int((Decimal(amount) * 100).to_integral_value())


class StripeGateway:
    """A ``PaymentGateway`` that takes money with Stripe."""

    mode: GatewayMode = "stripe"

    def __init__(self, settings: Settings, client: stripe.StripeClient | None = None) -> None:
        self.settings = settings
        self._client = client

    @property
    def client(self) -> stripe.StripeClient:
        if self._client is None:
            self._client = make_client(self.settings)
        return self._client

    def _url(self, path: str) -> str:
        return self.settings.public_base_url.rstrip("/") + path

    @staticmethod
    def _page(org_id: int | None) -> str:
        """Where the payer comes back: the billing page, or the organization's page."""
        return "/billing" if org_id is None else f"/orgs/{org_id}"

    @staticmethod
    def _metadata(user: User, org_id: int | None, **more: Any) -> dict[str, Any]:
        """Who pays, for the webhooks: the user, and the organization whose pool it is."""
        metadata: dict[str, Any] = {**more, "user_id": str(user.id)}
        if org_id is not None:
            metadata["org_id"] = str(org_id)
        return metadata

    @staticmethod
    def _who(user: User, org_id: int | None) -> tuple[object, ...]:
        """The idempotency-key parts naming the paying account."""
        return (user.id,) if org_id is None else ("org", org_id)

    # --- customers and prices ---------------------------------------------------------

    async def ensure_customer(self, db: Database, user: User, *, org_id: int | None = None) -> str:
        """The account's Stripe customer id, created once (idempotency key from the user or organization id).

        A user is a customer with their name and email; an organization is one of its own,
        with its name, its owner's (``user``) email for billing and ``org_id`` in the metadata.
        """
        async with db.transaction() as session:
            existing = await _customer_of(session, user.id, org_id)
            org = await session.get(Organization, org_id) if org_id is not None else None
        if existing:
            return existing
        params: dict[str, Any] = {"email": user.email, "name": user.username, "metadata": {"user_id": str(user.id)}}
        if org is not None:
            params = {"email": user.email, "name": org.name, "metadata": {"org_id": str(org.id)}}
        try:
            customer: Any = await self.client.v1.customers.create_async(
                params=params,  # type: ignore[arg-type]
                options=options("customer", *self._who(user, org_id)),  # type: ignore[arg-type]
            )
        except stripe.StripeError as exc:
            raise PaymentProviderError(f"Stripe could not create the customer: {exc.user_message or exc}") from exc
        async with db.transaction() as session:
            await session.execute(
                update(UserSubscription)
                .where(_account_of(user.id, org_id), UserSubscription.stripe_customer_id.is_(None))
                .values(stripe_customer_id=str(customer["id"]))
            )
            stored = await _customer_of(session, user.id, org_id)
        return stored or str(customer["id"])

    async def _line_item(
        self, db: Database, *, kind: str, key: str, amount: Decimal, name: str, recurring: bool
    ) -> dict[str, Any]:
        """The synced Price for this tier or pack, else an inline ``price_data`` at the catalog price."""
        async with db.transaction() as session:
            price_id = (
                await session.execute(
                    select(StripePrice.price_id).where(
                        StripePrice.kind == kind,
                        StripePrice.key == key,
                        StripePrice.unit_amount == cents(amount),
                        StripePrice.is_current.is_(True),
                    )
                )
            ).scalar_one_or_none()
        if price_id:
            return {"price": price_id, "quantity": 1}
        price_data: dict[str, Any] = {
            "currency": "usd",
            "unit_amount": cents(amount),
            "product_data": {"name": name},
        }
        if recurring:
            price_data["recurring"] = {"interval": "month"}
        return {"price_data": price_data, "quantity": 1}

    async def _tier_price_id(self, db: Database, tier: SubscriptionTier) -> str:
        item = await self._line_item(
            db, kind="tier", key=tier.name, amount=tier.monthly_price, name=tier.display_name, recurring=True
        )
        if "price" not in item:
            raise PaymentProviderError(
                f"The {tier.display_name} plan has no Stripe price yet: run `devops-agent stripe sync`."
            )
        return str(item["price"])

    # --- packs ------------------------------------------------------------------------

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
        """A pending purchase and a Checkout Session for it; credits come with the webhook."""
        customer = await self.ensure_customer(db, user, org_id=org_id)
        item = await self._line_item(
            db,
            kind="pack",
            key=str(pack.credits),
            amount=pack.price,
            name=f"{pack.credits} credits",
            recurring=False,
        )
        async with db.transaction() as session:
            purchase = await billing.create_purchase(
                session, user_id=user.id, org_id=org_id, credits_amount=pack.credits, price_paid=pack.price, now=now
            )
            purchase_id = purchase.id
        metadata = self._metadata(user, org_id, kind="pack", purchase_id=str(purchase_id), credits=str(pack.credits))
        page = self._page(org_id)
        try:
            checkout: Any = await self.client.v1.checkout.sessions.create_async(
                params={
                    "mode": "payment",
                    "customer": customer,
                    "client_reference_id": str(user.id),
                    "line_items": [item],
                    "metadata": metadata,
                    # Save the card for auto-recharge (charged later off-session).
                    "payment_intent_data": {"metadata": metadata, "setup_future_usage": "off_session"},
                    "success_url": self._url(page + "?checkout=success&session_id={CHECKOUT_SESSION_ID}"),
                    "cancel_url": self._url(page + "?checkout=cancelled"),
                },  # type: ignore[arg-type]
                options=options("checkout", "purchase", purchase_id),  # type: ignore[arg-type]
            )
        except stripe.StripeError as exc:
            async with db.transaction() as session:
                await session.execute(
                    update(CreditPurchase)
                    .where(CreditPurchase.id == purchase_id, CreditPurchase.payment_status == PurchaseStatus.PENDING)
                    .values(payment_status=PurchaseStatus.FAILED.value)
                )
            raise PaymentProviderError(f"Stripe could not start the checkout: {exc.user_message or exc}") from exc
        async with db.transaction() as session:
            await session.execute(
                update(CreditPurchase)
                .where(CreditPurchase.id == purchase_id)
                .values(stripe_checkout_session_id=str(checkout["id"]))
            )
        return PackPurchaseResult(checkout_url=str(checkout["url"]))

    # --- plans ------------------------------------------------------------------------

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
        """Checkout for a first subscription, else change the subscription's price."""
        async with db.transaction() as session:
            account = await billing.get_account(session, user_id=user.id, now=now, org_id=org_id)
            current = account.tier
        if tier.name == billing.FREE_TIER:
            return await self.cancel_plan(db, user=user, now=now, org_id=org_id)
        if tier.id == current.id and account.scheduled_tier_id is None and not account.cancel_at_period_end:
            raise AlreadyOnTier(f"you are already on the {tier.display_name} tier")
        subscription_id = account.stripe_subscription_id
        key = idempotency_key or uuid.uuid4().hex
        if subscription_id is None:
            if not billing.is_upgrade(current, tier):
                return await self._local_change(db, user=user, tier=tier, now=now, org_id=org_id)
            return await self._subscription_checkout(db, user=user, tier=tier, key=key, org_id=org_id)
        price_id = await self._tier_price_id(db, tier)
        try:
            subscription: Any = await self.client.v1.subscriptions.retrieve_async(subscription_id)
            item_id = field(subscription, "items", "data", 0, "id")
            params: dict[str, Any] = {
                "items": [{"id": item_id, "price": price_id}],
                "cancel_at_period_end": False,
                "metadata": self._metadata(user, org_id, tier=tier.name),
            }
            upgrade = billing.is_upgrade(current, tier)
            if upgrade:
                # Charge the difference now and start a new cycle: the paid invoice starts the period.
                params.update(proration_behavior="always_invoice", billing_cycle_anchor="now")
            else:
                params.update(proration_behavior="none")
            await self.client.v1.subscriptions.update_async(
                subscription_id,
                params=params,  # type: ignore[arg-type]
                options=options("plan-change", *self._who(user, org_id), key),  # type: ignore[arg-type]
            )
        except stripe.StripeError as exc:
            raise PaymentProviderError(f"Stripe could not change the subscription: {exc.user_message or exc}") from exc
        if upgrade:
            async with db.transaction() as session:
                account = await billing.get_account(session, user_id=user.id, now=now, org_id=org_id)
            return PlanChangeResult(
                subscription=account,
                message=f"Upgrade to {tier.display_name} requested: it starts as soon as Stripe confirms the payment.",
            )
        return await self._local_change(db, user=user, tier=tier, now=now, org_id=org_id)

    async def preview_plan(self, db: Database, *, user: User, tier: SubscriptionTier, now: datetime) -> PlanPreview:
        """The change's rules, with the amount Stripe would invoice now for an upgrade of a subscription.

        Stripe's upcoming-invoice preview (``invoices.create_preview``) with the same
        parameters ``change_plan`` sends: the new price, proration invoiced at once, a
        new cycle from now. A first plan goes through Checkout at the full price, and a
        downgrade invoices nothing now: the rules alone answer those.
        """
        async with db.transaction() as session:
            preview = await plan_preview.preview_change(session, user_id=user.id, tier_id=tier.id, now=now)
            account = await billing.get_account(session, user_id=user.id, now=now)
        subscription_id = account.stripe_subscription_id
        if not preview.upgrade or subscription_id is None or tier.name == billing.FREE_TIER:
            return preview
        price_id = await self._tier_price_id(db, tier)
        try:
            subscription: Any = await self.client.v1.subscriptions.retrieve_async(subscription_id)
            item_id = field(subscription, "items", "data", 0, "id")
            invoice: Any = await self.client.v1.invoices.create_preview_async(
                params={
                    "customer": account.stripe_customer_id or str(field(subscription, "customer")),
                    "subscription": subscription_id,
                    "subscription_details": {
                        "items": [{"id": item_id, "price": price_id}],
                        "proration_behavior": "always_invoice",
                        "billing_cycle_anchor": "now",
                    },
                }  # type: ignore[arg-type]
            )
        except stripe.StripeError as exc:
            raise PaymentProviderError(f"Stripe could not preview the change: {exc.user_message or exc}") from exc
        amount = (Decimal(int(field(invoice, "amount_due") or 0)) / 100).quantize(Decimal("0.01"))
        return preview.with_amount(amount, str(field(invoice, "currency") or preview.currency))

    async def _local_change(
        self, db: Database, *, user: User, tier: SubscriptionTier, now: datetime, org_id: int | None
    ) -> PlanChangeResult:
        async with db.transaction() as session:
            change = await billing.change_tier(session, user_id=user.id, tier_id=tier.id, now=now, org_id=org_id)
            account = await billing.get_account(session, user_id=user.id, now=now, org_id=org_id)
        return PlanChangeResult(subscription=account, message=change.message)

    async def _subscription_checkout(
        self, db: Database, *, user: User, tier: SubscriptionTier, key: str, org_id: int | None
    ) -> PlanChangeResult:
        customer = await self.ensure_customer(db, user, org_id=org_id)
        price_id = await self._tier_price_id(db, tier)
        metadata = self._metadata(user, org_id, kind="plan", tier=tier.name)
        page = self._page(org_id)
        try:
            checkout: Any = await self.client.v1.checkout.sessions.create_async(
                params={
                    "mode": "subscription",
                    "customer": customer,
                    "client_reference_id": str(user.id),
                    "line_items": [{"price": price_id, "quantity": 1}],
                    "metadata": metadata,
                    "subscription_data": {"metadata": metadata},
                    "success_url": self._url(page + "?checkout=success&session_id={CHECKOUT_SESSION_ID}"),
                    "cancel_url": self._url(page + "?checkout=cancelled"),
                },
                options=options("checkout", "plan", *self._who(user, org_id), tier.id, key),  # type: ignore[arg-type]
            )
        except stripe.StripeError as exc:
            raise PaymentProviderError(f"Stripe could not start the checkout: {exc.user_message or exc}") from exc
        return PlanChangeResult(checkout_url=str(checkout["url"]))

    async def cancel_plan(
        self, db: Database, *, user: User, now: datetime, org_id: int | None = None
    ) -> PlanChangeResult:
        """Cancel at period end: on the Stripe subscription, and scheduled here."""
        async with db.transaction() as session:
            account = await billing.get_account(session, user_id=user.id, now=now, org_id=org_id)
        if account.stripe_subscription_id:
            try:
                await self.client.v1.subscriptions.update_async(
                    account.stripe_subscription_id,
                    params={"cancel_at_period_end": True},
                    options=options(  # type: ignore[arg-type]
                        "cancel", *self._who(user, org_id), account.current_period_end.isoformat()
                    ),
                )
            except stripe.StripeError as exc:
                raise PaymentProviderError(
                    f"Stripe could not cancel the subscription: {exc.user_message or exc}"
                ) from exc
        async with db.transaction() as session:
            change = await billing.cancel(session, user_id=user.id, now=now, org_id=org_id)
            account = await billing.get_account(session, user_id=user.id, now=now, org_id=org_id)
        return PlanChangeResult(subscription=account, message=change.message)

    # --- seats ------------------------------------------------------------------------

    async def sync_seats(self, db: Database, *, org_id: int, now: datetime) -> str:
        """Bill the organization's extra seats: a subscription of its own, the tier's seat Price times their number.

        Made beside the plan's subscription once a paid plan has seats beyond those it
        includes; its quantity follows ``organizations.extra_seats`` (prorated); a pool
        without a Stripe plan, or on a tier without a seat Price (``stripe sync``), is billed
        no seat: a seats subscription left from before (the plan ended or changed) is
        cancelled. Call it outside any transaction, after the change of seats or plan committed.
        """
        async with db.transaction() as session:
            account = await billing.get_account(session, user_id=None, org_id=org_id, now=now)
            org = await session.get(Organization, org_id)
            price_id = await session.scalar(
                select(StripePrice.price_id).where(
                    StripePrice.kind == "seat", StripePrice.key == account.tier.name, StripePrice.is_current.is_(True)
                )
            )
        customer, plan = account.stripe_customer_id, account.stripe_subscription_id
        if org is None or not customer:
            return "not billed: no Stripe customer"
        wanted = org.extra_seats if plan and price_id is not None else 0
        try:
            listed: Any = await self.client.v1.subscriptions.list_async(params={"customer": customer, "limit": 100})
            current = next(
                (
                    sub
                    for sub in field(listed, "data") or []
                    if field(sub, "metadata", "kind") == SEATS_KIND and field(sub, "status") != "canceled"
                ),
                None,
            )
            if wanted == 0:
                if current is None:
                    return "no extra seats"
                await self.client.v1.subscriptions.cancel_async(str(current["id"]))
                return "no extra seats: their subscription is cancelled"
            assert price_id is not None  # seats are billed on a paid plan with a seat price only
            if current is None:
                await self.client.v1.subscriptions.create_async(
                    params={
                        "customer": customer,
                        "items": [{"price": price_id, "quantity": wanted}],
                        "metadata": {"kind": SEATS_KIND, "org_id": str(org_id)},
                    },
                    # Keyed by this sync: the same quantity may be billed again after a cancel.
                    options=options("seats", org_id, "create", wanted, now.isoformat()),  # type: ignore[arg-type]
                )
                return f"{wanted} extra seats billed"
            item = field(current, "items", "data", 0)
            if field(item, "quantity") == wanted and line_price_id(item) == price_id:
                return f"{wanted} extra seats billed already"
            await self.client.v1.subscriptions.update_async(
                str(current["id"]),
                params={
                    "items": [{"id": field(item, "id"), "price": price_id, "quantity": wanted}],
                    "proration_behavior": "create_prorations",
                },
                options=options("seats", org_id, current["id"], wanted, price_id, now.isoformat()),  # type: ignore[arg-type]
            )
        except stripe.StripeError as exc:
            raise PaymentProviderError(f"Stripe could not bill the extra seats: {exc.user_message or exc}") from exc
        return f"{wanted} extra seats billed"

    # --- portal -----------------------------------------------------------------------

    async def portal_url(self, db: Database, *, user: User, org_id: int | None = None) -> str:
        """A Customer Portal session (cards, invoices, cancellation) for the account's customer, back to its page."""
        customer = await self.ensure_customer(db, user, org_id=org_id)
        try:
            portal: Any = await self.client.v1.billing_portal.sessions.create_async(
                params={"customer": customer, "return_url": self._url(self._page(org_id))},
                options=options("portal", *self._who(user, org_id), uuid.uuid4().hex),  # type: ignore[arg-type]
            )
        except stripe.StripeError as exc:
            raise PaymentProviderError(f"Stripe could not open the portal: {exc.user_message or exc}") from exc
        return str(portal["url"])

    async def saved_card(self, db: Database, *, user: User, org_id: int | None = None) -> str | None:
        """The card Stripe holds for the account: the customer's default, else the first attached card."""
        async with db.transaction() as session:
            customer = await _customer_of(session, user.id, org_id)
        if not customer:
            return None
        try:
            found: Any = await self.client.v1.customers.retrieve_async(customer)
            default = field(found, "invoice_settings", "default_payment_method")
            if default:
                return str(default if isinstance(default, str) else default["id"])
            cards: Any = await self.client.v1.payment_methods.list_async(params={"customer": customer, "type": "card"})
        except stripe.StripeError as exc:
            raise PaymentProviderError(f"Stripe could not list the saved cards: {exc.user_message or exc}") from exc
        data = field(cards, "data") or []
        return str(data[0]["id"]) if data else None


def _account_of(user_id: int, org_id: int | None) -> Any:
    """The account paid for: the organization's pool with ``org_id``, else the user's own."""
    if org_id is not None:
        return UserSubscription.organization_id == org_id
    return UserSubscription.user_id == user_id


async def _customer_of(session: Any, user_id: int, org_id: int | None = None) -> str | None:
    found = await session.execute(select(UserSubscription.stripe_customer_id).where(_account_of(user_id, org_id)))
    value = found.scalar_one_or_none()
    return str(value) if value else None


async def bill_seats(gateway: PaymentGateway, db: Database, *, org_id: int, now: datetime) -> None:
    """Once a change of a team's members or plan committed: its seats on the bill as they now are.

    Stripe mode only (demo payments bill nothing). A Stripe failure is logged, not raised:
    the change stands, and the next change of the team's seats or plan bills them again.
    """
    if not isinstance(gateway, StripeGateway):
        return
    try:
        await gateway.sync_seats(db, org_id=org_id, now=now)
    except PaymentProviderError:
        logger.exception("the extra seats of organization %s could not be billed; the next change retries", org_id)
