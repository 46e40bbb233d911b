"""Stripe webhook events: verified, applied once, in any order.

How an event takes effect exactly once: its id is inserted into ``stripe_events``
(unique) at the start of the same transaction that applies its effect. A second
delivery finds the row and does nothing; two deliveries racing each other both try
the insert, and the database lets one through (PostgreSQL makes the other wait on
the unique index until the first commits, then refuses it; SQLite writers are
serialised already). If applying fails, the whole transaction, event row included,
rolls back, and Stripe's retry gets another chance.

How order stops mattering:

* packs are granted and clawed back by the engine's idempotent, row-locked calls;
* a paid invoice starts a period only forward (``billing.start_paid_period``);
* subscription state is applied only from an event newer than the last one applied
  to that subscription (``stripe_subscriptions.last_event_at``), and a deleted
  subscription stays deleted.

A correctly signed event can still carry a field we cannot use (a ``created`` that is
not a Unix time, an id of ours too large for any row, a value too long for its column).
It is rejected: nothing it would change is changed, it is recorded in ``stripe_events``
with the outcome ``rejected: <why>`` so an operator sees it, and the endpoint answers
400 ``invalid_event`` to it and to every redelivery (answering 500 would have Stripe
retry it for days to the same end).

Whose account an event is for: a user's own or an organization's pool (``Owner``).
Our metadata names it (``org_id`` first, then ``user_id``), else the Stripe customer
or subscription we recorded for the account; packs know it from their purchase row.

Nothing here calls Stripe: everything an event needs is in its payload.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import stripe
from sqlalchemy import ColumnElement, select, update
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from devops_agent import billing
from devops_agent.billing.errors import AlreadyOnTier
from devops_agent.billing.models import (
    CreditPurchase,
    PaymentStatus,
    PurchaseStatus,
    SubscriptionTier,
    UserSubscription,
)
from devops_agent.db import Database
from devops_agent.payments import auto_recharge

from .models import StripeEvent, StripePrice, StripeSubscription
from .stripe_client import (
    SEATS_KIND,
    field,
    invoice_subscription_id,
    line_is_proration,
    line_price_id,
    object_id,
    subscription_price_id,
)

Event = dict[str, Any]

log = logging.getLogger("devops_agent.payments")

# Stripe's times are Unix seconds; outside these years a value is not one of its events
# (and a far-future one would make every later event look older than it).
EARLIEST_TIME = 946_684_800  # 2000-01-01
LATEST_TIME = 4_102_444_800  # 2100-01-01
MAX_ROW_ID = 2**63 - 1
EVENT_ID_LENGTH = 255  # stripe_events.event_id
REJECTED = "rejected: "

# Stripe subscription status -> our account's payment_status (None: leave it as it is).
STATUS_MAP: dict[str, PaymentStatus | None] = {
    "active": PaymentStatus.ACTIVE,
    "trialing": PaymentStatus.ACTIVE,
    "past_due": PaymentStatus.PAST_DUE,
    "unpaid": PaymentStatus.UNPAID,
    "canceled": PaymentStatus.CANCELLED,
    "incomplete": None,
    "incomplete_expired": None,
    "paused": PaymentStatus.UNPAID,
}


class InvalidSignature(Exception):
    """The payload is not signed with our webhook secret (or is too old); nothing changed."""

    code = "invalid_signature"


class MalformedEvent(Exception):
    """A signed event with a field we cannot use; nothing changed, the event is recorded as rejected."""

    code = "invalid_event"


@dataclass(frozen=True)
class Owner:
    """The account a Stripe object pays for: a user's own (``user_id``) or an organization's pool (``org_id``)."""

    user_id: int | None = None
    org_id: int | None = None

    def __str__(self) -> str:
        return f"organization {self.org_id}" if self.org_id is not None else f"user {self.user_id}"

    @classmethod
    def of(cls, account: UserSubscription | CreditPurchase | StripeSubscription) -> Owner:
        """The owner of an account, of the account a purchase fills, or of a tracked subscription."""
        if account.organization_id is not None:
            return cls(org_id=account.organization_id)
        return cls(user_id=account.user_id)

    def where(self) -> ColumnElement[bool]:
        if self.org_id is not None:
            return UserSubscription.organization_id == self.org_id
        return UserSubscription.user_id == self.user_id


@dataclass(frozen=True)
class WebhookOutcome:
    event_id: str
    type: str
    outcome: str
    duplicate: bool = False
    rejected: bool = False


def verify_event(payload: bytes, signature_header: str | None, secret: str | None, *, tolerance: int = 300) -> Event:
    """Check the ``Stripe-Signature`` header with the SDK and return the parsed event."""
    if not secret:
        raise InvalidSignature("Stripe webhooks are not configured (STRIPE_WEBHOOK_SECRET is empty).")
    try:
        stripe.WebhookSignature.verify_header(payload, signature_header, secret, tolerance)
    except stripe.SignatureVerificationError as exc:
        raise InvalidSignature(f"The Stripe signature does not verify: {exc.user_message or exc}") from None
    try:
        event = json.loads(payload)
    except ValueError:
        raise InvalidSignature("The signed payload is not JSON.") from None
    if not isinstance(event, dict) or not isinstance(event.get("id"), str) or not isinstance(event.get("type"), str):
        raise InvalidSignature("The signed payload is not a Stripe event.")
    return cast(Event, event)


def _ts(epoch: Any) -> datetime:
    """A Stripe time (integer Unix seconds) as a datetime; ``MalformedEvent`` for anything else."""
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not EARLIEST_TIME <= epoch < LATEST_TIME:
        raise MalformedEvent(f"{_shown(epoch)} is not a Stripe timestamp")
    return datetime.fromtimestamp(epoch, UTC)


def _event_time(event: Event, now: datetime) -> datetime:
    """When Stripe created the event (``now`` when it does not say)."""
    created = event.get("created")
    return now if created is None else _ts(created)


def _row_id(raw: Any) -> int | None:
    """One of our row ids as Stripe carries it (metadata are strings).

    None when absent or not a decimal number (someone else's metadata: ignored as before);
    ``MalformedEvent`` for a number no row of ours can have.
    """
    if raw is None or isinstance(raw, bool):
        return None
    text = str(raw)
    if not (text.isascii() and text.isdigit()):
        return None
    if len(text) > len(str(MAX_ROW_ID)) or int(text) > MAX_ROW_ID:
        raise MalformedEvent(f"the id {_shown(text)} is out of range")
    return int(text)


def _shown(value: Any) -> str:
    """A value for a message, cut short: an event's fields can be arbitrarily long."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _record_id(event_id: str) -> str:
    """The id an event is recorded under: its own, or a digest of one too long for the column."""
    if len(event_id) <= EVENT_ID_LENGTH:
        return event_id
    return "sha256:" + hashlib.sha256(event_id.encode()).hexdigest()


async def handle_event(db: Database, event: Event, *, now: datetime) -> WebhookOutcome:
    """Apply one verified event, once: its id is recorded in the transaction of its effect.

    An event with a field we cannot use changes nothing and is recorded as rejected
    (``WebhookOutcome.rejected``), on its first delivery and on every later one.
    """
    event_id, event_type = str(event["id"]), str(event["type"])
    try:
        return await _apply_once(db, event, event_id, event_type, now)
    except MalformedEvent as exc:
        reason = str(exc)
    except DBAPIError as exc:
        if not _is_data_error(exc):
            raise
        reason = "a value does not fit our records"
    return await _reject(db, event_id, event_type, reason, now)


def _is_data_error(exc: DBAPIError) -> bool:
    """PostgreSQL refused a value (too long or out of range for its column: SQLSTATE class 22)."""
    sqlstate = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None) or ""
    return isinstance(exc, DataError) or str(sqlstate).startswith("22")


async def _reject(db: Database, event_id: str, event_type: str, reason: str, now: datetime) -> WebhookOutcome:
    """Record the event as rejected (its effect was rolled back with the failed transaction)."""
    outcome = REJECTED + reason
    log.warning("stripe event %s (%s) rejected: %s", _shown(event_id), _shown(event_type), reason)
    try:
        async with db.transaction() as session:
            session.add(
                StripeEvent(
                    event_id=_record_id(event_id),
                    type=event_type[:128],
                    outcome=outcome,
                    stripe_created_at=now,
                    processed_at=now,
                )
            )
    except IntegrityError:
        pass  # a concurrent delivery of the same event recorded it first
    return WebhookOutcome(event_id, event_type, outcome, rejected=True)


async def _apply_once(db: Database, event: Event, event_id: str, event_type: str, now: datetime) -> WebhookOutcome:
    async with db.transaction() as session:
        seen = await session.execute(select(StripeEvent.outcome).where(StripeEvent.event_id == _record_id(event_id)))
        previous = seen.scalar_one_or_none()
        if previous is not None:
            rejected = previous.startswith(REJECTED)
            return WebhookOutcome(event_id, event_type, previous, duplicate=True, rejected=rejected)
        if len(event_id) > EVENT_ID_LENGTH:
            raise MalformedEvent(f"the event id is longer than {EVENT_ID_LENGTH} characters")
        record = StripeEvent(
            event_id=event_id,
            type=event_type[:128],
            outcome="processing",
            stripe_created_at=_event_time(event, now),
            processed_at=now,
        )
        try:
            async with session.begin_nested():
                session.add(record)
                await session.flush()
        except IntegrityError:
            # A concurrent delivery of the same event committed first.
            return WebhookOutcome(event_id, event_type, "already processed", duplicate=True)
        handler = HANDLERS.get(event_type)
        obj = field(event, "data", "object") or {}
        outcome = await handler(session, obj, event, now) if handler else "ignored: event type not handled"
        record.outcome = outcome
        await session.flush()
    return WebhookOutcome(event_id, event_type, outcome)


# --- lookups ----------------------------------------------------------------------------


async def _owner_for_customer(session: AsyncSession, customer: Any) -> Owner | None:
    customer_id = object_id(customer)
    if not customer_id:
        return None
    account = (
        await session.execute(
            select(UserSubscription).where(UserSubscription.stripe_customer_id == customer_id).limit(1)
        )
    ).scalar_one_or_none()
    return Owner.of(account) if account is not None else None


async def _owner_for(session: AsyncSession, obj: Any) -> Owner | None:
    """The account an object belongs to: our metadata first (an organization, else a user), then the customer."""
    for key, column in (("org_id", UserSubscription.organization_id), ("user_id", UserSubscription.user_id)):
        raw = field(obj, "metadata", key)
        if raw is None and key == "user_id":
            raw = field(obj, "client_reference_id")
        row_id = _row_id(raw)
        if row_id is not None:
            found = await session.execute(select(UserSubscription).where(column == row_id))
            account = found.scalar_one_or_none()
            if account is not None:
                return Owner.of(account)
    return await _owner_for_customer(session, field(obj, "customer"))


async def _tier_for_price(session: AsyncSession, price_id: str | None) -> SubscriptionTier | None:
    if not price_id:
        return None
    tier = (
        await session.execute(select(SubscriptionTier).where(SubscriptionTier.stripe_price_id == price_id))
    ).scalar_one_or_none()
    if tier is not None:
        return tier
    key = (
        await session.execute(
            select(StripePrice.key).where(StripePrice.price_id == price_id, StripePrice.kind == "tier")
        )
    ).scalar_one_or_none()
    if key is None:
        return None
    return (await session.execute(select(SubscriptionTier).where(SubscriptionTier.name == key))).scalar_one_or_none()


async def _purchase_for(session: AsyncSession, obj: Any, *, session_id: str | None = None) -> CreditPurchase | None:
    purchase_id = _row_id(field(obj, "metadata", "purchase_id"))
    if purchase_id is not None:
        purchase = await session.get(CreditPurchase, purchase_id)
        if purchase is not None:
            return purchase
    if session_id:
        found = await session.execute(
            select(CreditPurchase).where(CreditPurchase.stripe_checkout_session_id == session_id)
        )
        return found.scalar_one_or_none()
    return None


async def _purchase_for_payment_intent(session: AsyncSession, payment_intent: Any) -> CreditPurchase | None:
    pi = object_id(payment_intent)
    if not pi:
        return None
    found = await session.execute(
        select(CreditPurchase).where(CreditPurchase.stripe_payment_intent_id == pi).order_by(CreditPurchase.id)
    )
    return found.scalars().first()


async def _account(session: AsyncSession, owner: Owner) -> UserSubscription:
    row = await session.execute(select(UserSubscription).where(owner.where()).execution_options(populate_existing=True))
    return row.scalar_one()


async def _set_stripe_ids(
    session: AsyncSession, owner: Owner, *, customer: str | None = None, subscription: str | None = None
) -> None:
    """Remember which Stripe customer and subscription pay for an account (no balance moves)."""
    values: dict[str, Any] = {}
    if customer:
        values["stripe_customer_id"] = customer
    if subscription:
        values["stripe_subscription_id"] = subscription
    if values:
        await session.execute(update(UserSubscription).where(owner.where()).values(**values))


async def _fail_purchase(session: AsyncSession, purchase_id: int) -> bool:
    result = await session.execute(
        update(CreditPurchase)
        .where(CreditPurchase.id == purchase_id, CreditPurchase.payment_status == PurchaseStatus.PENDING.value)
        .values(payment_status=PurchaseStatus.FAILED.value)
    )
    return bool(getattr(result, "rowcount", 0))


# --- packs ------------------------------------------------------------------------------


async def _checkout_completed(session: AsyncSession, obj: Any, event: Event, now: datetime) -> str:
    mode = field(obj, "mode")
    if mode == "subscription":
        return await _subscription_checkout_completed(session, obj, now)
    if mode != "payment":
        return f"ignored: checkout mode {mode}"
    purchase = await _purchase_for(session, obj, session_id=field(obj, "id"))
    if purchase is None:
        return "ignored: no purchase for this checkout session"
    client_ref = field(obj, "client_reference_id")
    if client_ref is not None and str(client_ref) != str(purchase.user_id):
        return f"ignored: session belongs to user {client_ref}, purchase {purchase.id} to another"
    purchase.stripe_checkout_session_id = purchase.stripe_checkout_session_id or field(obj, "id")
    purchase.stripe_payment_intent_id = object_id(field(obj, "payment_intent")) or purchase.stripe_payment_intent_id
    await session.flush()
    await _set_stripe_ids(session, Owner.of(purchase), customer=object_id(field(obj, "customer")))
    if field(obj, "payment_status") != "paid" and event["type"] != "checkout.session.async_payment_succeeded":
        return f"purchase {purchase.id}: waiting for the payment to clear"
    return await _grant(session, purchase, now)


async def _grant(session: AsyncSession, purchase: CreditPurchase, now: datetime) -> str:
    if purchase.payment_status not in (PurchaseStatus.PENDING, PurchaseStatus.COMPLETED):
        return f"ignored: purchase {purchase.id} is {purchase.payment_status}"
    result = await billing.grant_purchase(session, purchase_id=purchase.id, now=now)
    await auto_recharge.release(session, purchase_id=purchase.id, error=None, now=now)
    if result.replayed:
        return f"purchase {purchase.id} was already granted"
    return f"granted {purchase.credits_amount} credits for purchase {purchase.id}"


async def _checkout_failed(session: AsyncSession, obj: Any, event: Event, now: datetime) -> str:
    purchase = await _purchase_for(session, obj, session_id=field(obj, "id"))
    if purchase is None:
        return "ignored: no purchase for this checkout session"
    if await _fail_purchase(session, purchase.id):
        return f"purchase {purchase.id} failed ({event['type']})"
    return f"ignored: purchase {purchase.id} is not pending"


async def _payment_intent_succeeded(session: AsyncSession, obj: Any, event: Event, now: datetime) -> str:
    if field(obj, "metadata", "kind") != auto_recharge.METADATA_KIND:
        return "ignored: checkout payments are granted by their checkout session"
    purchase = await _purchase_for(session, obj) or await _purchase_for_payment_intent(session, field(obj, "id"))
    if purchase is None:
        return "ignored: no purchase for this payment"
    purchase.stripe_payment_intent_id = purchase.stripe_payment_intent_id or field(obj, "id")
    await session.flush()
    return await _grant(session, purchase, now)


async def _payment_intent_failed(session: AsyncSession, obj: Any, event: Event, now: datetime) -> str:
    if field(obj, "metadata", "kind") != auto_recharge.METADATA_KIND:
        return "ignored: not an auto-recharge payment"
    purchase = await _purchase_for(session, obj) or await _purchase_for_payment_intent(session, field(obj, "id"))
    if purchase is None:
        return "ignored: no purchase for this payment"
    await _fail_purchase(session, purchase.id)
    message = field(obj, "last_payment_error", "message") or "payment failed"
    await auto_recharge.release(session, purchase_id=purchase.id, error=str(message), now=now)
    return f"auto-recharge purchase {purchase.id} failed: {message}"


async def _claw_back(session: AsyncSession, obj: Any, event: Event, now: datetime) -> str:
    purchase = await _purchase_for_payment_intent(session, field(obj, "payment_intent"))
    if purchase is None:
        return "ignored: not a credit pack payment"
    if event["type"] == "charge.refunded" and field(obj, "refunded") is not True:
        return f"purchase {purchase.id}: partial refund, credits kept (for review)"
    if purchase.payment_status == PurchaseStatus.REFUNDED:
        return f"purchase {purchase.id} was already clawed back"
    if purchase.payment_status != PurchaseStatus.COMPLETED:
        await _fail_purchase(session, purchase.id)
        return f"purchase {purchase.id} was never granted; marked failed"
    why = "refunded" if event["type"] == "charge.refunded" else "disputed"
    await billing.claw_back_purchase(
        session, purchase_id=purchase.id, now=now, reason=f"payment {why} ({event['type']} {event['id']})"
    )
    await session.refresh(purchase)
    return f"clawed back purchase {purchase.id} ({why}), shortfall {purchase.clawback_shortfall}"


# --- plans ------------------------------------------------------------------------------


async def _subscription_checkout_completed(session: AsyncSession, obj: Any, now: datetime) -> str:
    owner = await _owner_for(session, obj)
    subscription = object_id(field(obj, "subscription"))
    if owner is None or not subscription:
        return "ignored: subscription checkout without a known user"
    await _set_stripe_ids(session, owner, customer=object_id(field(obj, "customer")))
    await _track_subscription(session, subscription, owner, status="active")
    return f"{owner} subscribed ({subscription}); credits come with the paid invoice"


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


async def _track_subscription(
    session: AsyncSession, subscription: str, owner: Owner, *, status: str
) -> StripeSubscription:
    """The row remembering a subscription's applied state, locked; made (as of no event yet) on first sight.

    The row lock (PostgreSQL) makes concurrent events of one subscription take turns,
    so the order check and the state it guards cannot interleave.
    """
    locked = (
        select(StripeSubscription)
        .where(StripeSubscription.subscription_id == subscription)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    row = (await session.execute(locked)).scalar_one_or_none()
    if row is not None:
        return row
    try:
        async with session.begin_nested():
            session.add(
                StripeSubscription(
                    subscription_id=subscription,
                    user_id=owner.user_id,
                    organization_id=owner.org_id,
                    status=status,
                    last_event_at=EPOCH,
                )
            )
            await session.flush()
    except IntegrityError:
        pass  # another event of this subscription made the row first
    return (await session.execute(locked)).scalar_one()


def _advance(row: StripeSubscription, event: Event, now: datetime, *, status: str) -> bool:
    """Apply ``status`` from ``event`` if it is not older than the last event applied; say whether."""
    at = _event_time(event, now)
    if at < row.last_event_at:
        return False
    row.status = status
    row.last_event_at = at
    return True


def _paid_line(invoice: Any) -> Any:
    lines = field(invoice, "lines", "data") or []
    regular = [line for line in lines if not line_is_proration(line)]
    chosen = regular or lines
    return chosen[-1] if chosen else None


async def _invoice_paid(session: AsyncSession, obj: Any, event: Event, now: datetime) -> str:
    subscription = invoice_subscription_id(obj)
    if not subscription:
        return "ignored: not a subscription invoice"
    owner = await _owner_for_subscription(session, subscription, obj)
    if owner is None:
        return "ignored: invoice for an unknown customer"
    line = _paid_line(obj)
    tier = await _tier_for_price(session, line_price_id(line))
    start, end = field(line, "period", "start"), field(line, "period", "end")
    if tier is None or start is None or end is None:
        return "ignored: invoice line without a known tier price"
    row = await _track_subscription(session, subscription, owner, status="active")
    if row.status == "canceled":
        return f"ignored: subscription {subscription} has ended"
    # A paid invoice older than the newest state applied (say a failed renewal since)
    # may still start its period (that is forward-only), but must not mark it active.
    newest = _advance(row, event, now, status="active")
    started = await billing.start_paid_period(
        session,
        user_id=owner.user_id,
        org_id=owner.org_id,
        tier_id=tier.id,
        start=_ts(start),
        end=_ts(end),
        now=now,
        subscription_ref=subscription,
        activate=newest,
    )
    if started:
        return f"{owner}: paid period {_ts(start).date()}..{_ts(end).date()} on {tier.name} started"
    return f"{owner}: invoice for a period already started (or over)" + ("; payment active" if newest else "")


async def _owner_for_subscription(session: AsyncSession, subscription: str, obj: Any) -> Owner | None:
    tracked = (
        await session.execute(select(StripeSubscription).where(StripeSubscription.subscription_id == subscription))
    ).scalar_one_or_none()
    if tracked is not None:
        return Owner.of(tracked)
    account = (
        await session.execute(select(UserSubscription).where(UserSubscription.stripe_subscription_id == subscription))
    ).scalar_one_or_none()
    if account is not None:
        return Owner.of(account)
    return await _owner_for(session, obj)


async def _invoice_payment_failed(session: AsyncSession, obj: Any, event: Event, now: datetime) -> str:
    subscription = invoice_subscription_id(obj)
    if not subscription:
        return "ignored: not a subscription invoice"
    owner = await _owner_for_subscription(session, subscription, obj)
    if owner is None:
        return "ignored: invoice for an unknown customer"
    account = await _account(session, owner)
    if account.stripe_subscription_id not in (None, subscription):
        return f"ignored: {owner} is paid by another subscription"
    row = await _track_subscription(session, subscription, owner, status="active")
    if row.status == "canceled" or not _advance(row, event, now, status="past_due"):
        return f"ignored: older than the state already applied to {subscription}"
    await billing.set_payment_status(
        session, user_id=owner.user_id, org_id=owner.org_id, status=PaymentStatus.PAST_DUE, now=now
    )
    return f"{owner}: renewal payment failed, past_due"


async def _subscription_changed(session: AsyncSession, obj: Any, event: Event, now: datetime) -> str:
    subscription = field(obj, "id")
    if not subscription:
        return "ignored: no subscription id"
    if field(obj, "metadata", "kind") == SEATS_KIND:
        return f"ignored: {subscription} bills extra seats, not a plan"
    owner = await _owner_for_subscription(session, subscription, obj)
    if owner is None:
        return "ignored: subscription of an unknown customer"
    row = await _track_subscription(session, subscription, owner, status="unknown")
    if row.status == "canceled":
        return f"ignored: subscription {subscription} has ended"
    if not _advance(row, event, now, status=str(field(obj, "status"))):
        return f"ignored: older than the state already applied to {subscription}"
    if event["type"] == "customer.subscription.deleted" or row.status == "canceled":
        row.status = "canceled"
        await session.flush()
        ended = await billing.end_paid_plan(
            session, user_id=owner.user_id, org_id=owner.org_id, subscription_ref=subscription, now=now
        )
        return f"{owner}: subscription ended" + ("; back to Free" if ended else "")
    await session.flush()
    account = await _account(session, owner)
    if account.stripe_subscription_id not in (None, subscription):
        return f"ignored: {owner} is paid by another subscription"
    notes = []
    payment_status = STATUS_MAP.get(row.status)
    stripe_paid = account.stripe_subscription_id == subscription
    if payment_status is not None and stripe_paid and account.payment_status != payment_status:
        await billing.set_payment_status(
            session, user_id=owner.user_id, org_id=owner.org_id, status=payment_status, now=now
        )
        notes.append(f"payment {payment_status.value}")
    notes.extend(await _apply_plan_intent(session, account, obj, now))
    return f"{owner}: subscription {row.status}" + (f" ({', '.join(notes)})" if notes else "")


async def _apply_plan_intent(session: AsyncSession, account: UserSubscription, obj: Any, now: datetime) -> list[str]:
    """Mirror a cancellation, a resumption or a downgrade made in Stripe (e.g. in the Portal)."""
    if account.stripe_subscription_id is None:
        return []
    current = await billing.tier_by_id(session, account.tier_id)
    if current.name == billing.FREE_TIER:
        return []
    wants_cancel = bool(field(obj, "cancel_at_period_end"))
    user_id, org_id = account.user_id, account.organization_id
    try:
        if wants_cancel and not account.cancel_at_period_end:
            await billing.cancel(session, now=now, user_id=user_id, org_id=org_id)
            return ["cancels at period end"]
        if not wants_cancel and account.cancel_at_period_end:
            await billing.change_tier(session, tier_id=current.id, now=now, user_id=user_id, org_id=org_id)
            return ["cancellation withdrawn"]
        target = await _tier_for_price(session, subscription_price_id(obj))
        if (
            target is not None
            and target.id not in (current.id, account.scheduled_tier_id)
            and not billing.is_upgrade(current, target)
        ):
            await billing.change_tier(session, tier_id=target.id, now=now, user_id=user_id, org_id=org_id)
            return [f"moves to {target.name} at period end"]
    except AlreadyOnTier:
        return []
    return []


Handler = Callable[[AsyncSession, Any, Event, datetime], Awaitable[str]]
HANDLERS: dict[str, Handler] = {
    "checkout.session.completed": _checkout_completed,
    "checkout.session.async_payment_succeeded": _checkout_completed,
    "checkout.session.async_payment_failed": _checkout_failed,
    "checkout.session.expired": _checkout_failed,
    "payment_intent.succeeded": _payment_intent_succeeded,
    "payment_intent.payment_failed": _payment_intent_failed,
    "charge.refunded": _claw_back,
    "charge.dispute.created": _claw_back,
    "invoice.paid": _invoice_paid,
    "invoice.payment_failed": _invoice_payment_failed,
    "customer.subscription.created": _subscription_changed,
    "customer.subscription.updated": _subscription_changed,
    "customer.subscription.deleted": _subscription_changed,
}
