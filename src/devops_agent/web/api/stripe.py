"""Stripe endpoints: the webhook, the Customer Portal link and the auto-recharge settings.

``POST /api/stripe/webhook`` takes no session and no CSRF token: it is
authenticated by the ``Stripe-Signature`` header alone (400 ``invalid_signature``
otherwise, and nothing changes). A signed event with a field we cannot use (a bad
``created``, an id out of range) answers 400 ``invalid_event``, changes nothing and is
recorded as rejected. Any other failure while applying an event answers 500 so that
Stripe delivers it again; the event's id is only recorded with its effect.

Once the event's transaction committed, the endpoint hands its effect (what
``payments.webhooks`` found it did) to ``notifications``: a pack paid earns a
receipt, a failed payment an email to the account's owner. The two packages do not
know each other; this endpoint is where one's outcome becomes the other's input.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, assert_never

from fastapi import APIRouter, Request

from devops_agent import metrics, notifications
from devops_agent.billing import orgs
from devops_agent.billing.catalog import Catalog
from devops_agent.db import Database
from devops_agent.payments import auto_recharge
from devops_agent.payments.stripe_gateway import StripeGateway, bill_seats
from devops_agent.payments.webhooks import (
    Effect,
    InvalidSignature,
    PackPaid,
    PackRefunded,
    PaymentFailed,
    PlanEnded,
    PlanRenewed,
    handle_event,
    verify_event,
)
from devops_agent.web.api import AUTHED, errors
from devops_agent.web.deps import CurrentUser, DatabaseDep, GatewayDep, NowDep, PaymentContext, PaymentDep, SettingsDep
from devops_agent.web.errors import ApiError
from devops_agent.web.schemas import AutoRechargeIn, AutoRechargeOut, FromAttributes, PortalOut, auto_recharge_out

router = APIRouter(prefix="/api/stripe", tags=["stripe"])


class WebhookOut(FromAttributes):
    received: bool = True
    event_id: str
    type: str
    duplicate: bool
    outcome: str


def stripe_only(gateway: Any) -> StripeGateway:
    """The Stripe gateway, or 400 ``payments_not_configured`` in demo mode."""
    if not isinstance(gateway, StripeGateway):
        raise ApiError(400, "payments_not_configured", "Payments run in demo mode: Stripe is not configured.")
    return gateway


async def notify(db: Database, effect: Effect | None, *, now: datetime) -> None:
    """Queue the email an event's committed effect earns (once: a redelivery reports the effect again)."""
    match effect:
        case PackPaid(purchase_id=purchase_id):
            await notifications.after_purchase(db, purchase_id=purchase_id, now=now)
        case PaymentFailed(owner=owner, invoice_id=invoice_id, amount_due=amount_due):
            await notifications.after_payment_failed(
                db, user_id=owner.user_id, org_id=owner.org_id, now=now, reference=invoice_id, amount=amount_due
            )
        case PlanRenewed() | PlanEnded() | PackRefunded() | None:
            pass  # no email is written for these
        case _:
            assert_never(effect)


@router.post(
    "/webhook",
    response_model=WebhookOut,
    summary="Stripe events, verified by their signature; each takes effect once",
    responses=errors(400),  # invalid_signature, or invalid_event (signed, but a field we cannot use)
)
async def webhook(
    request: Request, db: DatabaseDep, settings: SettingsDep, now: NowDep, gateway: GatewayDep
) -> WebhookOut:
    payload = await request.body()
    try:
        event = verify_event(payload, request.headers.get("stripe-signature"), settings.stripe_webhook_secret)
    except InvalidSignature as exc:
        metrics.WEBHOOK_EVENTS.labels("unverified", "invalid").inc()
        raise ApiError(400, "invalid_signature", str(exc)) from None
    outcome = await handle_event(db, event, now=now)
    metrics.WEBHOOK_EVENTS.labels(
        outcome.type,
        metrics.webhook_outcome(duplicate=outcome.duplicate, outcome=outcome.outcome, rejected=outcome.rejected),
    ).inc()
    if outcome.rejected:
        raise ApiError(400, "invalid_event", outcome.outcome, event_id=outcome.event_id)
    await notify(db, outcome.effect, now=now)  # committed: receipt or failed-renewal email
    if isinstance(outcome.effect, PlanRenewed | PlanEnded) and outcome.effect.owner.org_id is not None:
        # A team's plan started, changed or ended: its seats subscription follows (price, quantity, or none).
        await bill_seats(gateway, db, org_id=outcome.effect.owner.org_id, now=now)
    return WebhookOut.model_validate(outcome)


@router.post(
    "/portal",
    response_model=PortalOut,
    summary="A Stripe Customer Portal link (cards, invoices, cancellation) back to the billing page",
    responses=errors(*AUTHED),
)
async def portal(user: CurrentUser, db: DatabaseDep, gateway: GatewayDep) -> PortalOut:
    return PortalOut(url=await stripe_only(gateway).portal_url(db, user=user))


@router.get(
    "/auto-recharge",
    response_model=AutoRechargeOut,
    summary="The auto-recharge rule and its state",
    responses=errors(*AUTHED),
)
async def get_auto_recharge(user: CurrentUser, db: DatabaseDep, now: NowDep) -> AutoRechargeOut:
    return await read_auto_recharge(db, user_id=user.id, now=now)


async def read_auto_recharge(
    db: Database, *, user_id: int | None, now: datetime, org_id: int | None = None
) -> AutoRechargeOut:
    """The rule of the account that pays: the user's own, or the pool of ``org_id``."""
    async with db.transaction() as session:
        row = await auto_recharge.settings_for(session, user_id=user_id, org_id=org_id)
    return auto_recharge_out(row, now)


@router.put(
    "/auto-recharge",
    response_model=AutoRechargeOut,
    summary="Turn auto-recharge on or off: needs a card saved with Stripe (e.g. by a pack purchase)",
    responses=errors(*AUTHED),
)
async def put_auto_recharge(body: AutoRechargeIn, pay: PaymentDep) -> AutoRechargeOut:
    return await save_auto_recharge(body, pay)


NO_SAVED_CARD = "Save a card first: buy a pack once, or add a card in the billing portal."
NO_SAVED_POOL_CARD = "Save a card first: buy a pack for the pool once, or add a card in its billing portal."


async def save_auto_recharge(
    body: AutoRechargeIn, pay: PaymentContext, *, org_id: int | None = None
) -> AutoRechargeOut:
    """Save the rule of the account that pays (``pay.user``'s own, or the pool of ``org_id`` that they own).

    The saved card is read from Stripe before the transaction (network); the pool's
    membership is checked again inside it.
    """
    db, user, now = pay.db, pay.user, pay.now
    stripe_gateway = stripe_only(pay.gateway)
    catalog: Catalog = pay.request.app.state.catalog
    catalog.require_pack(body.pack_size)
    card = await stripe_gateway.saved_card(db, user=user, org_id=org_id)  # network: before the transaction
    if body.enabled and card is None:
        raise ApiError(400, "no_saved_card", NO_SAVED_CARD if org_id is None else NO_SAVED_POOL_CARD)
    async with db.transaction() as session:
        if org_id is not None:
            await orgs.membership(session, org_id=org_id, user_id=user.id)
        row = await auto_recharge.save_settings(
            session,
            user_id=user.id if org_id is None else None,
            org_id=org_id,
            enabled=body.enabled,
            threshold=body.threshold,
            pack_credits=body.pack_size,
            monthly_cap=body.monthly_cap,
            cooldown_minutes=body.cooldown_minutes,
            payment_method_id=card,
            now=now,
        )
    return auto_recharge_out(row, now)
