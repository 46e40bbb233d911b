"""Which Stripe webhook events earn an email, once the webhook's own transaction committed.

The webhook endpoint calls ``after_stripe_event`` after ``payments.webhooks.handle_event``
returned, so the purchase or the payment status it reads is the committed one. A
redelivered event finds the outbox row already there (the receipt is keyed by the
purchase, the payment failure by the invoice), so it is never emailed twice.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import or_, select

from devops_agent.billing.models import CreditPurchase, PurchaseStatus, UserSubscription

from .service import Notifier

PURCHASE_EVENTS = frozenset(
    {"checkout.session.completed", "checkout.session.async_payment_succeeded", "payment_intent.succeeded"}
)


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _id(value: Any) -> str | None:
    """An expandable Stripe field: a plain id, or an expanded object's id."""
    if value is None or isinstance(value, str):
        return value
    found = _get(value, "id")
    return str(found) if found is not None else None


async def after_stripe_event(notifier: Notifier, event: dict[str, Any], *, now: datetime) -> list[int]:
    """Queue the receipt of a pack Stripe completed, or the email of a failed renewal (a pool's: to its owner)."""
    kind = str(event.get("type", ""))
    obj = _get(event, "data", "object") or {}
    if kind in PURCHASE_EVENTS:
        ids = [i for i in (_id(obj.get("id")), _id(obj.get("payment_intent"))) if i]
        if not ids:
            return []
        async with notifier.db.transaction() as session:
            purchase_id = await session.scalar(
                select(CreditPurchase.id).where(
                    CreditPurchase.payment_status == PurchaseStatus.COMPLETED.value,
                    or_(
                        CreditPurchase.stripe_checkout_session_id.in_(ids),
                        CreditPurchase.stripe_payment_intent_id.in_(ids),
                    ),
                )
            )
        return await notifier.after_purchase(purchase_id=purchase_id, now=now) if purchase_id else []
    if kind == "invoice.payment_failed":
        invoice = _id(obj.get("id"))
        subscription = _id(_get(obj, "parent", "subscription_details", "subscription")) or _id(obj.get("subscription"))
        customer = _id(obj.get("customer"))
        if not invoice or not (subscription or customer):
            return []
        matches = []
        if subscription:
            matches.append(UserSubscription.stripe_subscription_id == subscription)
        if customer:
            matches.append(UserSubscription.stripe_customer_id == customer)
        async with notifier.db.transaction() as session:
            paying = select(UserSubscription.user_id, UserSubscription.organization_id).where(or_(*matches))
            found = (await session.execute(paying.limit(1))).first()
        if found is None:
            return []
        user_id, org_id = found
        due = obj.get("amount_due")
        amount = (Decimal(int(due)) / 100).quantize(Decimal("0.01")) if isinstance(due, int) else None
        return await notifier.after_payment_failed(
            user_id=user_id, org_id=org_id, now=now, reference=invoice, amount=amount
        )
    return []
