"""Credit pack purchases and their claw-backs.

Rules:

* A purchase is recorded pending (``create_purchase``); its credits arrive only with
  ``grant_purchase``, once: the grant's ledger key is ``purchase:<id>``, so a second
  delivery of the payment (a webhook retried, the browser's return) finds the first.
* A buyer's request made with an ``Idempotency-Key`` stores its ``request_key`` on the
  purchase, so a retry of the request finds it (``purchase_for_request``) instead of
  making a second one.
* Purchased credits never expire and only purchases move them up. A refunded or
  disputed pack is clawed back from them once (key ``clawback:<id>``), never below
  zero: what is already spent is recorded as the purchase's shortfall.
* The grant and the claw-back lock the purchase and then the account it pays into.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from .accounts import lock_account
from .errors import InvalidAmount, PurchaseNotFound
from .ledger import REQUEST_WINDOW, Balance, LedgerResult, append_ledger, replay_ledger
from .models import CreditPurchase, LedgerKind, PurchaseStatus, UserSubscription


async def create_purchase(
    session: AsyncSession,
    *,
    user_id: int,
    credits_amount: int,
    price_paid: Any,
    now: datetime,
    stripe_checkout_session_id: str | None = None,
    stripe_payment_intent_id: str | None = None,
    org_id: int | None = None,
    request_key: str | None = None,
) -> CreditPurchase:
    """Record a pending pack purchase; credits come with ``grant_purchase``.

    With ``org_id`` the pack fills the organization's pool; ``user_id`` is the buyer.
    ``request_key`` (``request_key(...)``) names the buyer's request, so a retry of it
    finds this purchase (``purchase_for_request``) instead of making a second one.
    """
    purchase = CreditPurchase(
        user_id=user_id,
        organization_id=org_id,
        credits_amount=credits_amount,
        price_paid=price_paid,
        payment_status=PurchaseStatus.PENDING,
        stripe_checkout_session_id=stripe_checkout_session_id,
        stripe_payment_intent_id=stripe_payment_intent_id,
        clawback_shortfall=0,
        created_at=now,
        request_key=request_key,
    )
    session.add(purchase)
    await session.flush()
    return purchase


async def purchase_for_request(session: AsyncSession, key: str | None, *, now: datetime) -> CreditPurchase | None:
    """The purchase an earlier attempt of this request made (it may have committed before a crash).

    A key names one request for ``REQUEST_WINDOW``; an older purchase gives its key up.
    """
    if key is None:
        return None
    found = (
        await session.execute(select(CreditPurchase).where(CreditPurchase.request_key == key))
    ).scalar_one_or_none()
    if found is None or found.created_at > now - REQUEST_WINDOW:
        return found
    found.request_key = None
    await session.flush()
    return None


async def _lock_purchase(session: AsyncSession, purchase_id: int) -> tuple[CreditPurchase, UserSubscription]:
    """The purchase and the account it pays into, both locked (re-read, not from the identity map)."""
    purchase = (
        await session.execute(
            select(CreditPurchase)
            .where(CreditPurchase.id == purchase_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()
    if purchase is None:
        raise PurchaseNotFound(f"purchase {purchase_id} does not exist")
    return purchase, await lock_account(session, user_id=purchase.user_id, org_id=purchase.organization_id)


async def grant_purchase(session: AsyncSession, *, purchase_id: int, now: datetime) -> LedgerResult:
    """Complete a pending purchase and add its credits to the purchased balance, once."""
    key = f"purchase:{purchase_id}"
    if (replay := await replay_ledger(session, key)) is not None:
        return replay
    purchase, sub = await _lock_purchase(session, purchase_id)
    if purchase.payment_status != PurchaseStatus.PENDING:
        # Completed by a concurrent delivery that committed first (its ledger row is now visible).
        if (replay := await replay_ledger(session, key)) is not None:
            return replay
        raise InvalidAmount(f"purchase {purchase_id} is {purchase.payment_status}, not pending")
    purchase.payment_status = PurchaseStatus.COMPLETED
    purchase.completed_at = now
    sub.purchased_credits_remaining += purchase.credits_amount
    sub.updated_at = now
    await session.flush()
    balance = Balance(sub.credits_remaining, sub.purchased_credits_remaining)
    ledger_id = await append_ledger(
        session,
        subscription_id=sub.id,
        user_id=purchase.user_id,
        kind=LedgerKind.PURCHASE,
        monthly_delta=0,
        purchased_delta=purchase.credits_amount,
        balance_after=balance,
        key=key,
        now=now,
        purchase_id=purchase.id,
        reason=f"{purchase.credits_amount} credit pack",
    )
    return LedgerResult(ledger_id, balance)


async def claw_back_purchase(session: AsyncSession, *, purchase_id: int, now: datetime, reason: str) -> LedgerResult:
    """Take a refunded or disputed pack's credits back from the purchased balance, once.

    Never below zero: what is already spent is recorded as the purchase's shortfall.
    """
    key = f"clawback:{purchase_id}"
    if (replay := await replay_ledger(session, key)) is not None:
        return replay
    purchase, sub = await _lock_purchase(session, purchase_id)
    if purchase.payment_status != PurchaseStatus.COMPLETED:
        raise InvalidAmount(f"purchase {purchase_id} is {purchase.payment_status}; only completed ones are clawed back")
    taken = min(purchase.credits_amount, sub.purchased_credits_remaining)
    purchase.payment_status = PurchaseStatus.REFUNDED
    purchase.clawback_shortfall = purchase.credits_amount - taken
    sub.purchased_credits_remaining -= taken
    sub.updated_at = now
    await session.flush()
    balance = Balance(sub.credits_remaining, sub.purchased_credits_remaining)
    ledger_id = await append_ledger(
        session,
        subscription_id=sub.id,
        user_id=purchase.user_id,
        kind=LedgerKind.CLAWBACK,
        monthly_delta=0,
        purchased_delta=-taken,
        balance_after=balance,
        key=key,
        now=now,
        purchase_id=purchase.id,
        reason=reason,
        details={"shortfall": purchase.clawback_shortfall},
    )
    return LedgerResult(ledger_id, balance)
