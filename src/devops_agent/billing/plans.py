"""Plan changes: tier changes, cancellations, scheduled downgrades, provider-paid periods.

Rules:

* An upgrade takes effect at once: the monthly credits left expire and the new tier's
  are granted for a new period anchored now (two ledger rows); purchased credits are
  kept, and what was used this month stays counted.
* A downgrade, and a cancellation (back to Free), are scheduled for the period's end
  (``scheduled_tier_id``, ``cancel_at_period_end``); the reset applies them
  (``accounts.apply_due_reset``). Asking for the current tier cancels what was
  scheduled.
* A retried upgrade request (its ``request_key``) finds its grant by a key derived
  from the request and answers again instead of acting twice.
* A plan paid through a payment provider moves only forward: a paid invoice starts
  its period once (the grant's key names the period and tier), and the provider
  ending the subscription moves the account to Free once.
* Every change takes the account's row lock first.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from .accounts import FREE_TIER, apply_due_reset, lock_account, start_period, tier_by_id, tier_by_name
from .errors import AlreadyOnTier
from .ledger import REQUEST_WINDOW, ledger_by_key
from .models import LedgerKind, PaymentStatus, SubscriptionTier, UserSubscription
from .periods import add_months


def is_upgrade(current: SubscriptionTier, target: SubscriptionTier) -> bool:
    """A dearer tier (or, at the same price, more credits) is an upgrade."""
    return (target.monthly_price, target.monthly_credits) > (current.monthly_price, current.monthly_credits)


@dataclass(frozen=True)
class TierChange:
    """What a plan change did, told to the customer: at once, or when the period ends."""

    effective: str  # "now" or "period_end"
    message: str


async def change_tier(
    session: AsyncSession,
    *,
    user_id: int | None,
    tier_id: int,
    now: datetime,
    org_id: int | None = None,
    request_key: str | None = None,
) -> TierChange:
    """Upgrade at once (new period, new tier's credits, purchased kept) or schedule a downgrade.

    With ``org_id`` the organization's plan changes (``user_id`` is who asked). With a
    ``request_key`` (``request_key(...)``) an upgrade's grant is keyed by it, so a retry
    of a request whose upgrade already committed answers it again instead of acting.
    """
    await apply_due_reset(session, user_id=user_id, now=now, org_id=org_id)
    target = await tier_by_id(session, tier_id, active_only=True)
    sub = await lock_account(session, user_id=user_id, org_id=org_id)
    grant_key = None
    if request_key is not None:
        earlier = await ledger_by_key(session, _upgrade_key(sub.id, request_key))
        if earlier is not None and earlier.created_at > now - REQUEST_WINDOW:
            return _upgraded(target)  # this request's upgrade committed already
        grant_key = _upgrade_key(sub.id, request_key) if earlier is None else None
    current = await tier_by_id(session, sub.tier_id)
    if target.id == current.id:
        if sub.scheduled_tier_id is None and not sub.cancel_at_period_end:
            raise AlreadyOnTier(f"you are already on the {target.display_name} tier")
        sub.scheduled_tier_id = None
        sub.cancel_at_period_end = False
        sub.updated_at = now
        await session.flush()
        return TierChange("now", f"You stay on {target.display_name}; the scheduled change is cancelled.")
    if not is_upgrade(current, target):
        sub.scheduled_tier_id = target.id
        sub.cancel_at_period_end = False
        sub.updated_at = now
        await session.flush()
        return TierChange(
            "period_end",
            f"You move to {target.display_name} on {sub.current_period_end.date().isoformat()}, "
            f"when this period ends; until then you keep {current.display_name}.",
        )
    await _move_now(
        session,
        sub,
        target,
        now=now,
        reason=f"upgrade from {current.display_name} to {target.display_name}",
        grant_key=grant_key,
    )
    sub.scheduled_tier_id = None
    sub.cancel_at_period_end = False
    sub.payment_status = PaymentStatus.ACTIVE
    await session.flush()
    return _upgraded(target)


async def _move_now(
    session: AsyncSession,
    sub: UserSubscription,
    tier: SubscriptionTier,
    *,
    now: datetime,
    reason: str,
    grant_key: str | None = None,
) -> None:
    """Put the account on ``tier`` from now: a month-long period anchored now, its monthly credits replaced."""
    await start_period(
        session,
        sub,
        tier=tier,
        start=now,
        end=add_months(now, 1),
        anchor=now,
        now=now,
        expiry_kind=LedgerKind.TIER_CHANGE,
        reason=reason,
        grant_key=grant_key,
    )


def _upgrade_key(subscription_id: int, request_key: str) -> str:
    # Hashed: a request key may be longer than a ledger key has room for.
    return f"s{subscription_id}:grant:request:{hashlib.sha256(request_key.encode()).hexdigest()}"


def _upgraded(target: SubscriptionTier) -> TierChange:
    return TierChange("now", f"Upgraded to {target.display_name}: {target.monthly_credits} credits this period.")


async def cancel(session: AsyncSession, *, user_id: int | None, now: datetime, org_id: int | None = None) -> TierChange:
    """Go back to Free when the period ends; credits stay usable until then (``org_id``: the organization's plan)."""
    await apply_due_reset(session, user_id=user_id, now=now, org_id=org_id)
    sub = await lock_account(session, user_id=user_id, org_id=org_id)
    free = await tier_by_name(session, FREE_TIER)
    if sub.tier_id == free.id:
        raise AlreadyOnTier("you are on the Free tier already; there is nothing to cancel")
    sub.cancel_at_period_end = True
    sub.scheduled_tier_id = free.id
    sub.updated_at = now
    await session.flush()
    return TierChange(
        "period_end", f"Your plan ends on {sub.current_period_end.date().isoformat()}; then you move to Free."
    )


# --- plans paid through a payment provider (Stripe) ----------------------------------


async def start_paid_period(
    session: AsyncSession,
    *,
    user_id: int | None,
    tier_id: int,
    start: datetime,
    end: datetime,
    now: datetime,
    subscription_ref: str | None,
    activate: bool = True,
    org_id: int | None = None,
) -> bool:
    """Start the period a provider's paid invoice covers, with the tier's credits; once, only forward.

    Applies when the period starts after the current one, or is still running and
    changes the tier (an upgrade paid before a late webhook). A period already over,
    or the current one again, changes nothing but the payment status: a paid invoice
    leaves the account ``active`` (unless ``activate`` is false: the caller knows of a
    newer failed payment). Returns whether a period started. ``org_id``: an organization's pool.
    """
    sub = await lock_account(session, user_id=user_id, org_id=org_id)
    tier = await tier_by_id(session, tier_id)
    if activate:
        sub.payment_status = PaymentStatus.ACTIVE
    if subscription_ref is not None:
        sub.stripe_subscription_id = subscription_ref
    sub.updated_at = now
    forward = start > sub.current_period_start or (end > now and tier.id != sub.tier_id)
    already = await ledger_by_key(session, f"s{sub.id}:grant:{start.isoformat()}:{tier.id}")
    if not forward or already is not None or end <= start:
        await session.flush()
        return False
    current = await tier_by_id(session, sub.tier_id)
    await start_period(
        session,
        sub,
        tier=tier,
        start=start,
        end=end,
        anchor=start,
        now=now,
        expiry_kind=LedgerKind.EXPIRY if tier.id == current.id else LedgerKind.TIER_CHANGE,
        reason=(
            "unused monthly credits expire: a new paid period starts"
            if tier.id == current.id
            else f"paid change from {current.display_name} to {tier.display_name}"
        ),
    )
    sub.scheduled_tier_id = None  # the scheduled change has arrived, or the provider billed otherwise
    await session.flush()
    return True


async def end_paid_plan(
    session: AsyncSession, *, user_id: int | None, subscription_ref: str, now: datetime, org_id: int | None = None
) -> bool:
    """The provider ended the subscription: move to Free now (purchased credits kept); once.

    Does nothing when the account is paid by another subscription (an old one ended)
    or is on Free already. Returns whether the tier changed. ``org_id``: an organization's pool.
    """
    sub = await lock_account(session, user_id=user_id, org_id=org_id)
    if sub.stripe_subscription_id not in (None, subscription_ref):
        return False
    free = await tier_by_name(session, FREE_TIER)
    sub.stripe_subscription_id = None
    sub.cancel_at_period_end = False
    sub.scheduled_tier_id = None
    sub.payment_status = PaymentStatus.CANCELLED
    sub.updated_at = now
    if sub.tier_id == free.id:
        await session.flush()
        return False
    current = await tier_by_id(session, sub.tier_id)
    await _move_now(
        session, sub, free, now=now, reason=f"{current.display_name} subscription ended: back to {free.display_name}"
    )
    return True


async def set_payment_status(
    session: AsyncSession, *, user_id: int | None, status: PaymentStatus, now: datetime, org_id: int | None = None
) -> None:
    """Record the provider's view of the plan's payments (``past_due`` after a failed renewal)."""
    sub = await lock_account(session, user_id=user_id, org_id=org_id)
    sub.payment_status = status
    sub.updated_at = now
    await session.flush()
