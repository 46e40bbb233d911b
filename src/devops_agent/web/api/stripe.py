"""Stripe endpoints: the webhook, the Customer Portal link and the auto-recharge settings.

``POST /api/stripe/webhook`` takes no session and no CSRF token: it is
authenticated by the ``Stripe-Signature`` header alone (400 ``invalid_signature``
otherwise, and nothing changes). A signed event with a field we cannot use (a bad
``created``, an id out of range) answers 400 ``invalid_event``, changes nothing and is
recorded as rejected. Any other failure while applying an event answers 500 so that
Stripe delivers it again; the event's id is only recorded with its effect.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from devops_agent import metrics, notifications
from devops_agent.billing import orgs
from devops_agent.billing.catalog import Catalog
from devops_agent.billing.models import User
from devops_agent.db import Database
from devops_agent.payments import auto_recharge
from devops_agent.payments.gateway import PaymentGateway
from devops_agent.payments.models import AutoRecharge
from devops_agent.payments.stripe_gateway import StripeGateway
from devops_agent.payments.webhooks import InvalidSignature, handle_event, verify_event
from devops_agent.web.api import AUTHED, errors
from devops_agent.web.deps import ClockDep, CurrentUser, DatabaseDep, GatewayDep, SettingsDep
from devops_agent.web.errors import ApiError

router = APIRouter(prefix="/api/stripe", tags=["stripe"])


class WebhookOut(BaseModel):
    received: bool = True
    event_id: str
    type: str
    duplicate: bool
    outcome: str


class PortalOut(BaseModel):
    url: str


class AutoRechargeIn(BaseModel):
    """'When my balance falls below ``threshold``, buy the ``pack_size`` pack' (at most ``monthly_cap``

    times a calendar month, at least ``cooldown_minutes`` apart).
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool
    threshold: int = Field(ge=0, le=1_000_000)
    pack_size: int = Field(gt=0)
    monthly_cap: int = Field(default=3, ge=1, le=31)
    cooldown_minutes: int = Field(default=60, ge=0, le=7 * 24 * 60)


class AutoRechargeOut(BaseModel):
    enabled: bool
    threshold: int | None
    pack_size: int | None
    monthly_cap: int | None
    cooldown_minutes: int | None
    has_saved_card: bool
    in_flight: bool
    recharges_this_month: int
    last_attempt_at: datetime | None
    last_error: str | None


def stripe_only(gateway: Any) -> StripeGateway:
    """The Stripe gateway, or 400 ``payments_not_configured`` in demo mode."""
    if not isinstance(gateway, StripeGateway):
        raise ApiError(400, "payments_not_configured", "Payments run in demo mode: Stripe is not configured.")
    return gateway


def auto_recharge_out(row: AutoRecharge | None, now: datetime) -> AutoRechargeOut:
    if row is None:
        return AutoRechargeOut(
            enabled=False,
            threshold=None,
            pack_size=None,
            monthly_cap=None,
            cooldown_minutes=None,
            has_saved_card=False,
            in_flight=False,
            recharges_this_month=0,
            last_attempt_at=None,
            last_error=None,
        )
    return AutoRechargeOut(
        enabled=row.enabled,
        threshold=row.threshold,
        pack_size=row.pack_credits,
        monthly_cap=row.monthly_cap,
        cooldown_minutes=row.cooldown_minutes,
        has_saved_card=row.payment_method_id is not None,
        in_flight=row.in_flight,
        recharges_this_month=row.month_count if row.month_start == auto_recharge.month_start(now) else 0,
        last_attempt_at=row.last_attempt_at,
        last_error=row.last_error,
    )


@router.post(
    "/webhook",
    response_model=WebhookOut,
    summary="Stripe events, verified by their signature; each takes effect once",
    responses=errors(400),  # invalid_signature, or invalid_event (signed, but a field we cannot use)
)
async def webhook(request: Request, db: DatabaseDep, settings: SettingsDep, now: ClockDep) -> WebhookOut:
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
    await notifications.after_stripe_event(db, event, now=now)  # committed: receipt or failed-renewal email
    return WebhookOut(
        event_id=outcome.event_id, type=outcome.type, duplicate=outcome.duplicate, outcome=outcome.outcome
    )


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
async def get_auto_recharge(user: CurrentUser, db: DatabaseDep, now: ClockDep) -> AutoRechargeOut:
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
async def put_auto_recharge(
    body: AutoRechargeIn, request: Request, user: CurrentUser, db: DatabaseDep, gateway: GatewayDep, now: ClockDep
) -> AutoRechargeOut:
    return await save_auto_recharge(body, request, user=user, db=db, gateway=gateway, now=now)


NO_SAVED_CARD = "Save a card first: buy a pack once, or add a card in the billing portal."
NO_SAVED_POOL_CARD = "Save a card first: buy a pack for the pool once, or add a card in its billing portal."


async def save_auto_recharge(
    body: AutoRechargeIn,
    request: Request,
    *,
    user: User,
    db: Database,
    gateway: PaymentGateway,
    now: datetime,
    org_id: int | None = None,
) -> AutoRechargeOut:
    """Save the rule of the account that pays (``user``'s own, or the pool of ``org_id`` that ``user`` owns).

    The saved card is read from Stripe before the transaction (network); the pool's
    membership is checked again inside it.
    """
    stripe_gateway = stripe_only(gateway)
    catalog: Catalog = request.app.state.catalog
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
