"""Auto-recharge: "when my balance falls below N, buy pack P" with the saved card.

Three steps, never a network call inside a transaction:

1. **claim** (one transaction): check the rule (enabled, balance below the
   threshold, cooldown over, monthly cap not reached) and take the in-flight flag
   with a conditional UPDATE that only one caller can win, then record a pending
   purchase. Two requests that both see a low balance make one charge.
2. **charge** (no transaction): an off-session PaymentIntent, confirmed at once,
   with our idempotency key derived from the purchase id.
3. **record** (one transaction): a succeeded PaymentIntent grants the purchase and
   releases the flag; a decline fails the purchase and releases it with the error.
   A payment still processing keeps the flag until the ``payment_intent.*`` webhook
   (``webhooks.packs``) grants or fails it; a flag older than ``IN_FLIGHT_TIMEOUT`` is
   considered lost and may be taken again.

A rule watches one account: a user's own, or with ``org_id`` an organization's pool,
which is charged to the organization's Stripe customer and its saved card; the
purchase is recorded as bought by the organization's owner.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import stripe
from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from devops_agent import billing
from devops_agent.billing.catalog import Catalog
from devops_agent.billing.models import CreditPurchase, PurchaseStatus, UserSubscription
from devops_agent.billing.org_models import MemberRole, OrganizationMember
from devops_agent.db import Database

from .models import AutoRecharge
from .stripe_client import field, options

log = logging.getLogger("devops_agent.payments")

METADATA_KIND = "auto_recharge"
IN_FLIGHT_TIMEOUT = timedelta(hours=1)


@dataclass(frozen=True)
class RechargeOutcome:
    """What one ``maybe_recharge`` call did: ``status`` is skipped, granted, declined or pending."""

    status: str
    reason: str
    purchase_id: int | None = None
    payment_intent_id: str | None = None


@dataclass(frozen=True)
class _Claim:
    purchase_id: int
    buyer_id: int
    amount_cents: int
    customer: str
    payment_method: str


def _rule_of(user_id: int | None, org_id: int | None) -> Any:
    if org_id is not None:
        return AutoRecharge.organization_id == org_id
    if user_id is None:
        raise ValueError("an auto-recharge rule belongs to a user or an organization")
    return AutoRecharge.user_id == user_id


def _account_of(user_id: int | None, org_id: int | None) -> Any:
    if org_id is not None:
        return UserSubscription.organization_id == org_id
    return UserSubscription.user_id == user_id


def month_start(now: datetime) -> datetime:
    """The first instant of ``now``'s calendar month (UTC): the monthly cap counts from here."""
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


async def release(session: AsyncSession, *, purchase_id: int, error: str | None, now: datetime) -> None:
    """Drop the in-flight flag held for ``purchase_id`` (a no-op for any other purchase)."""
    await session.execute(
        update(AutoRecharge)
        .where(AutoRecharge.in_flight_purchase_id == purchase_id)
        .values(in_flight=False, in_flight_purchase_id=None, in_flight_since=None, last_error=error, updated_at=now)
    )


async def settings_for(session: AsyncSession, *, user_id: int | None, org_id: int | None = None) -> AutoRecharge | None:
    """The rule of the user's account, or of the organization's pool with ``org_id``."""
    return (
        await session.execute(
            select(AutoRecharge).where(_rule_of(user_id, org_id)).execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()


async def save_settings(
    session: AsyncSession,
    *,
    user_id: int | None,
    enabled: bool,
    threshold: int,
    pack_credits: int,
    monthly_cap: int,
    cooldown_minutes: int,
    payment_method_id: str | None,
    now: datetime,
    org_id: int | None = None,
) -> AutoRecharge:
    """Create or replace the account's rule; the in-flight state and this month's count are kept."""
    row = await settings_for(session, user_id=user_id, org_id=org_id)
    if row is None:
        if org_id is not None:
            row = AutoRecharge(organization_id=org_id, in_flight=False, month_count=0)
        else:
            row = AutoRecharge(user_id=user_id, in_flight=False, month_count=0)
        session.add(row)
    row.enabled = enabled
    row.threshold = threshold
    row.pack_credits = pack_credits
    row.monthly_cap = monthly_cap
    row.cooldown_minutes = cooldown_minutes
    row.payment_method_id = payment_method_id
    row.updated_at = now
    await session.flush()
    return row


async def _buyer(session: AsyncSession, *, user_id: int | None, org_id: int | None) -> int | None:
    """Who a recharge is bought by: the user, or the organization's owner (its billing role)."""
    if org_id is None:
        return user_id
    owner = await session.execute(
        select(OrganizationMember.user_id).where(
            OrganizationMember.organization_id == org_id, OrganizationMember.role == MemberRole.OWNER.value
        )
    )
    found = owner.scalar_one_or_none()
    return int(found) if found is not None else None


async def _claim(
    session: AsyncSession, *, user_id: int | None, now: datetime, catalog: Catalog, org_id: int | None = None
) -> _Claim | str:
    rule = await settings_for(session, user_id=user_id, org_id=org_id)
    if rule is None or not rule.enabled:
        return "auto-recharge is off"
    buyer = await _buyer(session, user_id=user_id, org_id=org_id)
    if buyer is None:
        return "the organization has no owner to buy for it"
    account = (await session.execute(select(UserSubscription).where(_account_of(user_id, org_id)))).scalar_one_or_none()
    if account is None or not account.stripe_customer_id or not rule.payment_method_id:
        return "no saved card"
    if account.balance >= rule.threshold:
        return f"balance {account.balance} is not below {rule.threshold}"
    if rule.in_flight and rule.in_flight_since is not None and rule.in_flight_since > now - IN_FLIGHT_TIMEOUT:
        return "a recharge is already in flight"
    if rule.last_attempt_at is not None and rule.last_attempt_at + timedelta(minutes=rule.cooldown_minutes) > now:
        return "cooling down after the last recharge"
    this_month = month_start(now)
    counted = rule.month_count if rule.month_start == this_month else 0
    if counted >= rule.monthly_cap:
        return f"monthly cap of {rule.monthly_cap} recharges reached"
    pack = catalog.pack(rule.pack_credits)
    if pack is None:
        return f"pack of {rule.pack_credits} credits is no longer sold"
    # Compare-and-set on the state we just read: of concurrent callers only one changes the row.
    won = await session.execute(
        update(AutoRecharge)
        .where(
            AutoRecharge.id == rule.id,
            or_(AutoRecharge.in_flight.is_(False), AutoRecharge.in_flight_since <= now - IN_FLIGHT_TIMEOUT),
            AutoRecharge.last_attempt_at.is_(None)
            if rule.last_attempt_at is None
            else AutoRecharge.last_attempt_at == rule.last_attempt_at,
        )
        .values(
            in_flight=True,
            in_flight_since=now,
            last_attempt_at=now,
            month_start=this_month,
            month_count=counted + 1,
            updated_at=now,
        )
    )
    if not getattr(won, "rowcount", 0):
        return "a recharge is already in flight"
    purchase = await billing.create_purchase(
        session, user_id=buyer, org_id=org_id, credits_amount=pack.credits, price_paid=pack.price, now=now
    )
    await session.execute(
        update(AutoRecharge).where(AutoRecharge.id == rule.id).values(in_flight_purchase_id=purchase.id)
    )
    return _Claim(
        purchase_id=purchase.id,
        buyer_id=buyer,
        amount_cents=int(Decimal(pack.price) * 100),
        customer=account.stripe_customer_id,
        payment_method=rule.payment_method_id,
    )


async def maybe_recharge(
    db: Database,
    client: stripe.StripeClient,
    *,
    user_id: int | None,
    now: datetime,
    catalog: Catalog,
    org_id: int | None = None,
) -> RechargeOutcome:
    """Buy the account's auto-recharge pack if the rule says so; safe to call after every charge.

    ``org_id``: the organization's pool (``user_id`` is then not needed).
    """
    async with db.transaction() as session:
        claim = await _claim(session, user_id=user_id, now=now, catalog=catalog, org_id=org_id)
    if isinstance(claim, str):
        return RechargeOutcome("skipped", claim)
    metadata = {"kind": METADATA_KIND, "purchase_id": str(claim.purchase_id), "user_id": str(claim.buyer_id)}
    if org_id is not None:
        metadata["org_id"] = str(org_id)
    try:
        intent: Any = await client.v1.payment_intents.create_async(
            params={
                "amount": claim.amount_cents,
                "currency": "usd",
                "customer": claim.customer,
                "payment_method": claim.payment_method,
                "off_session": True,
                "confirm": True,
                "metadata": metadata,
            },
            options=options("auto-recharge", claim.purchase_id),  # type: ignore[arg-type]
        )
    except stripe.CardError as exc:
        message = exc.user_message or "card declined"
        pi_id = field(exc.error, "payment_intent", "id") if exc.error else None
        async with db.transaction() as session:
            await _fail(session, claim.purchase_id, pi_id, message, now)
        return RechargeOutcome("declined", message, claim.purchase_id, pi_id)
    except stripe.StripeError as exc:
        # The outcome is unknown: keep the purchase pending and the flag held; the
        # payment_intent webhook settles it, or the flag times out.
        return RechargeOutcome(
            "pending", f"Stripe did not answer clearly: {exc.user_message or exc}", claim.purchase_id
        )
    status = field(intent, "status")
    async with db.transaction() as session:
        await _set_intent(session, claim.purchase_id, str(intent["id"]))
        if status == "succeeded":
            await billing.grant_purchase(session, purchase_id=claim.purchase_id, now=now)
            await release(session, purchase_id=claim.purchase_id, error=None, now=now)
            return RechargeOutcome("granted", "paid", claim.purchase_id, str(intent["id"]))
        if status in ("requires_payment_method", "requires_action", "canceled"):
            reason = field(intent, "last_payment_error", "message") or f"payment {status}"
            await _fail(session, claim.purchase_id, str(intent["id"]), str(reason), now)
            return RechargeOutcome("declined", str(reason), claim.purchase_id, str(intent["id"]))
    return RechargeOutcome("pending", f"payment {status}", claim.purchase_id, str(intent["id"]))


async def recharge_if_due(
    db: Database,
    gateway: object,
    *,
    user_id: int | None,
    now: datetime,
    catalog: Catalog,
    org_id: int | None = None,
) -> RechargeOutcome | None:
    """Run the account's auto-recharge after a charge (``org_id``: a pool's): a no-op in demo mode, never raises.

    Meant for a background task after the response (``BackgroundTasks.add_task``): the
    charge that lowered the balance has committed, and no transaction is held while
    Stripe answers. A failure is logged; the next charge tries again.
    """
    from devops_agent.payments.stripe_gateway import StripeGateway  # the gateway imports nothing from here

    if not isinstance(gateway, StripeGateway):
        return None
    try:
        return await maybe_recharge(db, gateway.client, user_id=user_id, now=now, catalog=catalog, org_id=org_id)
    except Exception:  # a background task has no caller to tell; log it and let the next charge retry
        log.exception("auto-recharge for %s failed", f"organization {org_id}" if org_id else f"user {user_id}")
        return None


async def _set_intent(session: AsyncSession, purchase_id: int, payment_intent_id: str | None) -> None:
    if payment_intent_id:
        await session.execute(
            update(CreditPurchase)
            .where(CreditPurchase.id == purchase_id)
            .values(stripe_payment_intent_id=payment_intent_id)
        )


async def _fail(session: AsyncSession, purchase_id: int, pi_id: str | None, message: str, now: datetime) -> None:
    await _set_intent(session, purchase_id, pi_id)
    await session.execute(
        update(CreditPurchase)
        .where(CreditPurchase.id == purchase_id, CreditPurchase.payment_status == PurchaseStatus.PENDING.value)
        .values(payment_status=PurchaseStatus.FAILED.value)
    )
    await release(session, purchase_id=purchase_id, error=message, now=now)
