"""What a plan change would do, told before it is made: the same rules as ``plans.change_tier``.

An upgrade starts a new period at once: the monthly credits left are replaced by the
new tier's (they are lost), purchased credits stay, and the new price is due now.
A downgrade (or a cancellation, a move to Free) waits for the period's end: nothing is
due now and nothing is lost; the new tier's credits arrive at the renewal. Keeping the
current tier while a change is scheduled undoes the schedule.

The payment gateway may replace ``amount_due_now`` with its provider's figure (Stripe's
upcoming-invoice preview, with proration); the credits follow from these rules alone.
Nothing here writes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from .accounts import get_account, tier_by_id
from .errors import AlreadyOnTier
from .models import SubscriptionTier, UserSubscription
from .periods import add_months
from .plans import is_upgrade

CURRENCY = "usd"


@dataclass(frozen=True)
class PlanPreview:
    target: SubscriptionTier
    upgrade: bool
    amount_due_now: Decimal
    currency: str
    credits_after: int
    monthly_credits_lost: int
    effective_at: datetime
    next_renewal: datetime

    def with_amount(self, amount: Decimal, currency: str) -> PlanPreview:
        return replace(self, amount_due_now=amount, currency=currency)


def preview_for(sub: UserSubscription, target: SubscriptionTier, *, now: datetime) -> PlanPreview:
    """The preview of moving ``sub`` (with ``tier`` loaded) to ``target``."""
    current = sub.tier
    purchased = sub.purchased_credits_remaining
    if target.id == current.id:
        if sub.scheduled_tier_id is None and not sub.cancel_at_period_end:
            raise AlreadyOnTier(f"you are already on the {target.display_name} tier")
        return PlanPreview(target, False, Decimal("0.00"), CURRENCY, sub.balance, 0, now, sub.current_period_end)
    if is_upgrade(current, target):
        return PlanPreview(
            target,
            True,
            Decimal(target.monthly_price).quantize(Decimal("0.01")),
            CURRENCY,
            target.monthly_credits + purchased,
            sub.credits_remaining,
            now,
            add_months(now, 1),
        )
    end = sub.current_period_end
    return PlanPreview(
        target, False, Decimal("0.00"), CURRENCY, target.monthly_credits + purchased, 0, end, add_months(end, 1)
    )


async def preview_change(
    session: AsyncSession, *, user_id: int, tier_id: int, now: datetime, org_id: int | None = None
) -> PlanPreview:
    """The preview of moving the user's account (or ``org_id``'s pool) to ``tier_id``."""
    target = await tier_by_id(session, tier_id, active_only=True)
    sub = await get_account(session, user_id=None if org_id is not None else user_id, now=now, org_id=org_id)
    return preview_for(sub, target, now=now)
