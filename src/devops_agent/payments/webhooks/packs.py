"""Handlers of one-off payments: credit packs bought at Checkout or by auto-recharge, refunds, disputes."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from devops_agent import billing
from devops_agent.billing.models import CreditPurchase, PurchaseStatus

from .. import auto_recharge
from ..stripe_client import field, object_id
from .accounts import Owner, set_stripe_ids
from .events import Event, row_id
from .outcomes import Handled, PackPaid, PackRefunded


async def purchase_for(session: AsyncSession, obj: Any, *, session_id: str | None = None) -> CreditPurchase | None:
    """The purchase our metadata names, else the one made for this Checkout session."""
    purchase_id = row_id(field(obj, "metadata", "purchase_id"))
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


async def purchase_for_payment_intent(session: AsyncSession, payment_intent: Any) -> CreditPurchase | None:
    pi = object_id(payment_intent)
    if not pi:
        return None
    found = await session.execute(
        select(CreditPurchase).where(CreditPurchase.stripe_payment_intent_id == pi).order_by(CreditPurchase.id)
    )
    return found.scalars().first()


async def fail_purchase(session: AsyncSession, purchase_id: int) -> bool:
    result = await session.execute(
        update(CreditPurchase)
        .where(CreditPurchase.id == purchase_id, CreditPurchase.payment_status == PurchaseStatus.PENDING.value)
        .values(payment_status=PurchaseStatus.FAILED.value)
    )
    return bool(getattr(result, "rowcount", 0))


async def pack_checkout_completed(session: AsyncSession, obj: Any, event: Event, now: datetime) -> Handled:
    """A Checkout session in ``payment`` mode completed: grant its pack once the payment cleared."""
    purchase = await purchase_for(session, obj, session_id=field(obj, "id"))
    if purchase is None:
        return Handled("ignored: no purchase for this checkout session")
    client_ref = field(obj, "client_reference_id")
    if client_ref is not None and str(client_ref) != str(purchase.user_id):
        return Handled(f"ignored: session belongs to user {client_ref}, purchase {purchase.id} to another")
    purchase.stripe_checkout_session_id = purchase.stripe_checkout_session_id or field(obj, "id")
    purchase.stripe_payment_intent_id = object_id(field(obj, "payment_intent")) or purchase.stripe_payment_intent_id
    await session.flush()
    await set_stripe_ids(session, Owner.of(purchase), customer=object_id(field(obj, "customer")))
    if field(obj, "payment_status") != "paid" and event["type"] != "checkout.session.async_payment_succeeded":
        return Handled(f"purchase {purchase.id}: waiting for the payment to clear")
    return await grant(session, purchase, now)


async def grant(session: AsyncSession, purchase: CreditPurchase, now: datetime) -> Handled:
    """Grant a paid pack (once: a replay finds it granted) and let its auto-recharge, if any, run again."""
    if purchase.payment_status not in (PurchaseStatus.PENDING, PurchaseStatus.COMPLETED):
        return Handled(f"ignored: purchase {purchase.id} is {purchase.payment_status}")
    result = await billing.grant_purchase(session, purchase_id=purchase.id, now=now)
    await auto_recharge.release(session, purchase_id=purchase.id, error=None, now=now)
    paid = PackPaid(purchase_id=purchase.id, credits=purchase.credits_amount)
    if result.replayed:
        return Handled(f"purchase {purchase.id} was already granted", paid)
    return Handled(f"granted {purchase.credits_amount} credits for purchase {purchase.id}", paid)


async def checkout_failed(session: AsyncSession, obj: Any, event: Event, now: datetime) -> Handled:
    purchase = await purchase_for(session, obj, session_id=field(obj, "id"))
    if purchase is None:
        return Handled("ignored: no purchase for this checkout session")
    if await fail_purchase(session, purchase.id):
        return Handled(f"purchase {purchase.id} failed ({event['type']})")
    return Handled(f"ignored: purchase {purchase.id} is not pending")


async def payment_intent_succeeded(session: AsyncSession, obj: Any, event: Event, now: datetime) -> Handled:
    if field(obj, "metadata", "kind") != auto_recharge.METADATA_KIND:
        return Handled("ignored: checkout payments are granted by their checkout session")
    purchase = await purchase_for(session, obj) or await purchase_for_payment_intent(session, field(obj, "id"))
    if purchase is None:
        return Handled("ignored: no purchase for this payment")
    purchase.stripe_payment_intent_id = purchase.stripe_payment_intent_id or field(obj, "id")
    await session.flush()
    return await grant(session, purchase, now)


async def payment_intent_failed(session: AsyncSession, obj: Any, event: Event, now: datetime) -> Handled:
    if field(obj, "metadata", "kind") != auto_recharge.METADATA_KIND:
        return Handled("ignored: not an auto-recharge payment")
    purchase = await purchase_for(session, obj) or await purchase_for_payment_intent(session, field(obj, "id"))
    if purchase is None:
        return Handled("ignored: no purchase for this payment")
    await fail_purchase(session, purchase.id)
    message = field(obj, "last_payment_error", "message") or "payment failed"
    await auto_recharge.release(session, purchase_id=purchase.id, error=str(message), now=now)
    return Handled(f"auto-recharge purchase {purchase.id} failed: {message}")


async def claw_back(session: AsyncSession, obj: Any, event: Event, now: datetime) -> Handled:
    """A pack's payment refunded in full or disputed: take its credits back (what is left of them)."""
    purchase = await purchase_for_payment_intent(session, field(obj, "payment_intent"))
    if purchase is None:
        return Handled("ignored: not a credit pack payment")
    if event["type"] == "charge.refunded" and field(obj, "refunded") is not True:
        return Handled(f"purchase {purchase.id}: partial refund, credits kept (for review)")
    if purchase.payment_status == PurchaseStatus.REFUNDED:
        return Handled(f"purchase {purchase.id} was already clawed back")
    if purchase.payment_status != PurchaseStatus.COMPLETED:
        await fail_purchase(session, purchase.id)
        return Handled(f"purchase {purchase.id} was never granted; marked failed")
    why: Literal["refunded", "disputed"] = "refunded" if event["type"] == "charge.refunded" else "disputed"
    await billing.claw_back_purchase(
        session, purchase_id=purchase.id, now=now, reason=f"payment {why} ({event['type']} {event['id']})"
    )
    await session.refresh(purchase)
    return Handled(
        f"clawed back purchase {purchase.id} ({why}), shortfall {purchase.clawback_shortfall}",
        PackRefunded(purchase_id=purchase.id, reason=why, shortfall=purchase.clawback_shortfall),
    )
