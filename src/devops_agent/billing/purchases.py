"""Credit pack purchases and their claw-backs.

Rules:

* A purchase is recorded pending (``create_purchase``); its credits arrive only with
  ``grant_purchase``, once: the grant's ledger key is ``purchase:<id>``, so a second
  delivery of the payment (a webhook retried, the browser's return) finds the first.
* A buyer's request made with an ``Idempotency-Key`` stores its ``request_key`` on the
  purchase, so a retry of the request finds it (``purchase_for_request``) instead of
  making a second one.
* A completed purchase is a paid grant of its credits at its price (the cost basis of
  each credit), never expiring unless the catalog gives the pack ``expires_after_days``.
  A refunded or disputed pack is clawed back once (key ``clawback:<id>``): from its own
  grant first, then from the account's other paid grants in draw-down order, never
  below zero; what is already spent is recorded as the purchase's shortfall.
* The grant and the claw-back lock the purchase and then the account it pays into.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from .accounts import lock_account
from .catalog import current_catalog
from .errors import InvalidAmount, PurchaseNotFound
from .grants import add_grant, expiry_after, grants_of, move
from .ledger import REQUEST_WINDOW, Balance, LedgerResult, append_ledger, replay_ledger
from .models import CreditGrant, CreditPurchase, GrantCategory, LedgerKind, PurchaseStatus, UserSubscription


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
    pack = current_catalog().pack(purchase.credits_amount)
    _, ledger_id = await add_grant(
        session,
        sub,
        category=GrantCategory.PAID,
        credits=purchase.credits_amount,
        now=now,
        kind=LedgerKind.PURCHASE,
        key=key,
        source=f"purchase:{purchase.id}",
        user_id=purchase.user_id,
        reason=f"{purchase.credits_amount} credit pack",
        expires_at=expiry_after(pack.expires_after_days if pack else None, now),
        price=purchase.price_paid,
        purchase_id=purchase.id,
    )
    return LedgerResult(ledger_id, Balance.of(sub))


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
    paid = [g for g in await grants_of(session, sub.id) if g.category == GrantCategory.PAID]
    # Its own grant first, then the other paid grants in draw-down order.
    paid.sort(key=lambda g: g.purchase_id != purchase.id)
    moves: list[tuple[CreditGrant, int]] = []
    left = purchase.credits_amount
    for grant in paid:
        take = min(grant.remaining, left)
        if take:
            moves.append((grant, -take))
            left -= take
    purchase.payment_status = PurchaseStatus.REFUNDED
    purchase.clawback_shortfall = left
    if not moves:  # nothing left to take: the claw-back is still recorded, once
        row_id = await append_ledger(
            session,
            subscription_id=sub.id,
            user_id=purchase.user_id,
            kind=LedgerKind.CLAWBACK,
            monthly_delta=0,
            purchased_delta=0,
            balance_after=Balance.of(sub),
            key=key,
            now=now,
            purchase_id=purchase.id,
            reason=reason,
            details={"shortfall": purchase.clawback_shortfall},
        )
        return LedgerResult(row_id, Balance.of(sub))
    ledger_id, balance = await move(
        session,
        sub,
        moves,
        kind=LedgerKind.CLAWBACK,
        key=key,
        now=now,
        user_id=purchase.user_id,
        purchase_id=purchase.id,
        reason=reason,
        details={"shortfall": purchase.clawback_shortfall},
    )
    await session.flush()
    return LedgerResult(ledger_id, balance)
