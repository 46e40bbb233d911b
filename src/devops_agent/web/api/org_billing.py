"""An organization's billing beyond plans and packs: the Customer Portal and auto-recharge of the pool.

The same shapes as the personal ``/api/stripe/portal`` and ``/api/stripe/auto-recharge``,
for the organization's own Stripe customer and its pool; only the owner handles them
(admins and members get 403, non-members 404).
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from devops_agent.billing import orgs
from devops_agent.billing.catalog import Catalog
from devops_agent.payments import auto_recharge
from devops_agent.web.api import AUTHED, errors
from devops_agent.web.api.orgs import MEMBER_ROUTE, OrgId, as_owner
from devops_agent.web.api.stripe import AutoRechargeIn, AutoRechargeOut, PortalOut, auto_recharge_out, stripe_only
from devops_agent.web.deps import ClockDep, CurrentUser, DatabaseDep, GatewayDep
from devops_agent.web.errors import ApiError

router = APIRouter(prefix="/api/orgs", tags=["organizations"])


@router.post(
    "/{org_id}/billing/portal",
    response_model=PortalOut,
    summary="A Stripe Customer Portal link for the organization's customer (owner)",
    responses=errors(*MEMBER_ROUTE, 400, 502),
)
async def portal(org_id: OrgId, user: CurrentUser, db: DatabaseDep, gateway: GatewayDep) -> PortalOut:
    await as_owner(db, org_id, user)
    return PortalOut(url=await stripe_only(gateway).portal_url(db, user=user, org_id=org_id))


@router.get(
    "/{org_id}/auto-recharge",
    response_model=AutoRechargeOut,
    summary="The pool's auto-recharge rule and its state (owner)",
    responses=errors(*MEMBER_ROUTE),
)
async def get_auto_recharge(org_id: OrgId, user: CurrentUser, db: DatabaseDep, now: ClockDep) -> AutoRechargeOut:
    await as_owner(db, org_id, user)
    async with db.transaction() as session:
        row = await auto_recharge.settings_for(session, user_id=None, org_id=org_id)
    return auto_recharge_out(row, now)


@router.put(
    "/{org_id}/auto-recharge",
    response_model=AutoRechargeOut,
    summary="Turn the pool's auto-recharge on or off: needs a card saved with the organization's customer (owner)",
    responses=errors(*AUTHED, 400, 404, 502),
)
async def put_auto_recharge(
    org_id: OrgId,
    body: AutoRechargeIn,
    request: Request,
    user: CurrentUser,
    db: DatabaseDep,
    gateway: GatewayDep,
    now: ClockDep,
) -> AutoRechargeOut:
    await as_owner(db, org_id, user)
    stripe_gateway = stripe_only(gateway)
    catalog: Catalog = request.app.state.catalog
    catalog.require_pack(body.pack_size)
    card = await stripe_gateway.saved_card(db, user=user, org_id=org_id)  # network: before the transaction
    if body.enabled and card is None:
        raise ApiError(
            400,
            "no_saved_card",
            "Save a card first: buy a pack for the pool once, or add a card in its billing portal.",
        )
    async with db.transaction() as session:
        await orgs.get_organization(session, org_id=org_id, user_id=user.id)
        row = await auto_recharge.save_settings(
            session,
            user_id=None,
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
