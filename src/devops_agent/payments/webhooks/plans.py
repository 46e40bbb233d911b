"""Handlers of subscriptions: a plan subscribed at Checkout, its invoices, its changes made in Stripe."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from devops_agent import billing
from devops_agent.billing.errors import AlreadyOnTier
from devops_agent.billing.models import PaymentStatus, SubscriptionTier, UserSubscription

from ..models import StripePrice, StripeSubscription
from ..stripe_client import (
    SEATS_KIND,
    field,
    invoice_subscription_id,
    line_is_proration,
    line_price_id,
    object_id,
    subscription_price_id,
)
from .accounts import Owner, account_of, owner_for, owner_for_customer, owner_for_subscription, set_stripe_ids
from .events import Event, event_time, timestamp
from .outcomes import Handled, PaymentFailed, PlanEnded, PlanRenewed, dollars

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

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


async def tier_for_price(session: AsyncSession, price_id: str | None) -> SubscriptionTier | None:
    """The tier a Stripe price sells: set on the tier, or recorded by ``devops-agent stripe sync``."""
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


async def subscription_checkout_completed(session: AsyncSession, obj: Any, now: datetime) -> Handled:
    """A Checkout session in ``subscription`` mode completed: remember the subscription; its invoice brings credits."""
    owner = await owner_for(session, obj)
    subscription = object_id(field(obj, "subscription"))
    if owner is None or not subscription:
        return Handled("ignored: subscription checkout without a known user")
    await set_stripe_ids(session, owner, customer=object_id(field(obj, "customer")))
    await track_subscription(session, subscription, owner, status="active")
    return Handled(f"{owner} subscribed ({subscription}); credits come with the paid invoice")


async def track_subscription(
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


def advance(row: StripeSubscription, event: Event, now: datetime, *, status: str) -> bool:
    """Apply ``status`` from ``event`` if it is not older than the last event applied; say whether."""
    at = event_time(event, now)
    if at < row.last_event_at:
        return False
    row.status = status
    row.last_event_at = at
    return True


def paid_line(invoice: Any) -> Any:
    """The invoice line that names the plan paid for (the last regular line, else the last line)."""
    lines = field(invoice, "lines", "data") or []
    regular = [line for line in lines if not line_is_proration(line)]
    chosen = regular or lines
    return chosen[-1] if chosen else None


async def invoice_paid(session: AsyncSession, obj: Any, event: Event, now: datetime) -> Handled:
    subscription = invoice_subscription_id(obj)
    if not subscription:
        return Handled("ignored: not a subscription invoice")
    owner = await owner_for_subscription(session, subscription, obj)
    if owner is None:
        return Handled("ignored: invoice for an unknown customer")
    line = paid_line(obj)
    tier = await tier_for_price(session, line_price_id(line))
    start, end = field(line, "period", "start"), field(line, "period", "end")
    if tier is None or start is None or end is None:
        return Handled("ignored: invoice line without a known tier price")
    row = await track_subscription(session, subscription, owner, status="active")
    if row.status == "canceled":
        return Handled(f"ignored: subscription {subscription} has ended")
    # A paid invoice older than the newest state applied (say a failed renewal since)
    # may still start its period (that is forward-only), but must not mark it active.
    newest = advance(row, event, now, status="active")
    period_start, period_end = timestamp(start), timestamp(end)
    started = await billing.start_paid_period(
        session,
        user_id=owner.user_id,
        org_id=owner.org_id,
        tier_id=tier.id,
        start=period_start,
        end=period_end,
        now=now,
        subscription_ref=subscription,
        activate=newest,
    )
    if started:
        return Handled(
            f"{owner}: paid period {period_start.date()}..{period_end.date()} on {tier.name} started",
            PlanRenewed(owner=owner, tier=tier.name, period_start=period_start, period_end=period_end),
        )
    return Handled(f"{owner}: invoice for a period already started (or over)" + ("; payment active" if newest else ""))


async def invoice_payment_failed(session: AsyncSession, obj: Any, event: Event, now: datetime) -> Handled:
    """A renewal could not be collected: the plan's account is past due (if the event is the newest).

    Any failed invoice of an account we know is reported (``PaymentFailed``), whether or
    not it changes the plan's state, so that the account's owner hears of it.
    """
    subscription = invoice_subscription_id(obj)
    if subscription:
        owner = await owner_for_subscription(session, subscription, obj)
    else:
        owner = await owner_for_customer(session, field(obj, "customer"))
    invoice = object_id(field(obj, "id"))
    failed = None
    if owner is not None and invoice:
        failed = PaymentFailed(owner=owner, invoice_id=invoice, amount_due=dollars(field(obj, "amount_due")))
    if not subscription:
        return Handled("ignored: not a subscription invoice", failed)
    if owner is None:
        return Handled("ignored: invoice for an unknown customer")
    account = await account_of(session, owner)
    if account.stripe_subscription_id not in (None, subscription):
        return Handled(f"ignored: {owner} is paid by another subscription", failed)
    row = await track_subscription(session, subscription, owner, status="active")
    if row.status == "canceled" or not advance(row, event, now, status="past_due"):
        return Handled(f"ignored: older than the state already applied to {subscription}", failed)
    await billing.set_payment_status(
        session, user_id=owner.user_id, org_id=owner.org_id, status=PaymentStatus.PAST_DUE, now=now
    )
    return Handled(f"{owner}: renewal payment failed, past_due", failed)


async def subscription_changed(session: AsyncSession, obj: Any, event: Event, now: datetime) -> Handled:
    """A subscription created, updated or deleted in Stripe: mirror its status and the plan change it asks for."""
    subscription = field(obj, "id")
    if not subscription:
        return Handled("ignored: no subscription id")
    if field(obj, "metadata", "kind") == SEATS_KIND:
        return Handled(f"ignored: {subscription} bills extra seats, not a plan")
    owner = await owner_for_subscription(session, subscription, obj)
    if owner is None:
        return Handled("ignored: subscription of an unknown customer")
    row = await track_subscription(session, subscription, owner, status="unknown")
    if row.status == "canceled":
        return Handled(f"ignored: subscription {subscription} has ended")
    if not advance(row, event, now, status=str(field(obj, "status"))):
        return Handled(f"ignored: older than the state already applied to {subscription}")
    if event["type"] == "customer.subscription.deleted" or row.status == "canceled":
        row.status = "canceled"
        await session.flush()
        ended = await billing.end_paid_plan(
            session, user_id=owner.user_id, org_id=owner.org_id, subscription_ref=subscription, now=now
        )
        return Handled(f"{owner}: subscription ended" + ("; back to Free" if ended else ""), PlanEnded(owner=owner))
    await session.flush()
    account = await account_of(session, owner)
    if account.stripe_subscription_id not in (None, subscription):
        return Handled(f"ignored: {owner} is paid by another subscription")
    notes = []
    payment_status = STATUS_MAP.get(row.status)
    stripe_paid = account.stripe_subscription_id == subscription
    if payment_status is not None and stripe_paid and account.payment_status != payment_status:
        await billing.set_payment_status(
            session, user_id=owner.user_id, org_id=owner.org_id, status=payment_status, now=now
        )
        notes.append(f"payment {payment_status.value}")
    notes.extend(await apply_plan_intent(session, account, obj, now))
    return Handled(f"{owner}: subscription {row.status}" + (f" ({', '.join(notes)})" if notes else ""))


async def apply_plan_intent(session: AsyncSession, account: UserSubscription, obj: Any, now: datetime) -> list[str]:
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
        target = await tier_for_price(session, subscription_price_id(obj))
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
