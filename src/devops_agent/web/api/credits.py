"""The credit pack endpoints (``/api/credits``): the packs on sale and buying one.

A purchase goes through the payment gateway: demo mode completes it at once
(recorded as completed with its list price), Stripe mode answers a checkout URL.
``Idempotency-Key`` makes a retried purchase replay the first answer. A team's pool
buys its packs through the same ``buy_pack`` (``web.api.org_pool``).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from devops_agent import metrics, notifications
from devops_agent.billing.catalog import Catalog
from devops_agent.web.api import AUTHED, errors
from devops_agent.web.deps import GatewayDep, IdempotencyKeyDep, PaymentContext, PaymentDep
from devops_agent.web.idempotency import run_idempotent_post
from devops_agent.web.schemas import (
    USD,
    CheckoutOut,
    FromAttributes,
    PaymentsMode,
    PurchaseCompletedOut,
    PurchaseIn,
    PurchaseOut,
)

router = APIRouter(prefix="/api/credits", tags=["credits"])


class PackOut(FromAttributes):
    credits: int
    price: USD
    price_per_credit: USD
    popular: bool


class PacksOut(BaseModel):
    packs: list[PackOut]
    payments_mode: PaymentsMode


def _catalog(request: Request) -> Catalog:
    catalog: Catalog = request.app.state.catalog
    return catalog


@router.get("/packs", response_model=PacksOut, summary="Credit packs on sale (public); their credits never expire")
async def list_packs(request: Request, gateway: GatewayDep) -> PacksOut:
    return PacksOut(packs=[PackOut.model_validate(p) for p in _catalog(request).packs], payments_mode=gateway.mode)


@router.post(
    "/purchase",
    response_model=PurchaseCompletedOut | CheckoutOut,
    summary="Buy a credit pack: completed at once (demo) or a checkout URL (Stripe)",
    responses=errors(*AUTHED, 409),
)
async def purchase(body: PurchaseIn, pay: PaymentDep, idempotency_key: IdempotencyKeyDep) -> JSONResponse:
    return await buy_pack(body, pay, idempotency_key=idempotency_key)


async def buy_pack(
    body: PurchaseIn, pay: PaymentContext, *, idempotency_key: str | None, org_id: int | None = None
) -> JSONResponse:
    """Sell the pack to the account that pays: ``pay.user``'s own, or with ``org_id`` the pool they own.

    The team's endpoint checks the role first; from here the purchase is the same:
    through the gateway, counted, its receipt emailed once committed, replayed for a
    retried ``Idempotency-Key``.
    """
    pack = _catalog(pay.request).require_pack(body.pack_size)
    db, user, now = pay.db, pay.user, pay.now

    async def work() -> tuple[int, dict[str, Any]]:
        result = await pay.gateway.purchase_pack(
            db, user=user, pack=pack, idempotency_key=idempotency_key, now=now, org_id=org_id
        )
        if result.checkout_url is not None:
            metrics.PACK_PURCHASES.labels("checkout").inc()
            return 200, CheckoutOut(checkout_url=result.checkout_url).model_dump(mode="json")
        assert result.purchase is not None
        assert result.credits_remaining is not None
        metrics.PACK_PURCHASES.labels("completed").inc()
        await notifications.after_purchase(db, purchase_id=result.purchase.id, now=now)  # committed: the receipt
        purchase = PurchaseOut.model_validate(result.purchase)
        out = PurchaseCompletedOut(purchase=purchase, credits_remaining=result.credits_remaining)
        return 200, out.model_dump(mode="json")

    return await run_idempotent_post(db, pay.request, body, user_id=user.id, key=idempotency_key, now=now, work=work)
