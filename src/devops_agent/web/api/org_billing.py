"""An organization's billing beyond plans and packs: the Portal, auto-recharge, seats and member usage.

The portal and auto-recharge are the personal ``/api/stripe/portal`` and
``/api/stripe/auto-recharge`` (the same functions), for the organization's own Stripe
customer and its pool; only the owner handles them (admins and members get 403,
non-members 404). Seats and each member's usage this period (JSON and CSV) are shown
to the owner and the admins, who see every member's usage anyway.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime
from decimal import Decimal

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from devops_agent.billing import usage
from devops_agent.billing.models import User
from devops_agent.db import Database
from devops_agent.web.api import AUTHED, errors
from devops_agent.web.api.orgs import MEMBER_ROUTE, OrgId, as_owner
from devops_agent.web.api.stripe import read_auto_recharge, save_auto_recharge, stripe_only
from devops_agent.web.deps import CurrentUser, DatabaseDep, GatewayDep, NowDep, PaymentDep
from devops_agent.web.schemas import AutoRechargeIn, AutoRechargeOut, FromAttributes, PortalOut, Timestamp

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
async def get_auto_recharge(org_id: OrgId, user: CurrentUser, db: DatabaseDep, now: NowDep) -> AutoRechargeOut:
    await as_owner(db, org_id, user)
    return await read_auto_recharge(db, user_id=None, org_id=org_id, now=now)


@router.put(
    "/{org_id}/auto-recharge",
    response_model=AutoRechargeOut,
    summary="Turn the pool's auto-recharge on or off: needs a card saved with the organization's customer (owner)",
    responses=errors(*AUTHED, 400, 404, 502),
)
async def put_auto_recharge(org_id: OrgId, body: AutoRechargeIn, pay: PaymentDep) -> AutoRechargeOut:
    await as_owner(pay.db, org_id, pay.user)
    return await save_auto_recharge(body, pay, org_id=org_id)


# --- seats and each member's usage (the organization's billing page) ------------------


class SeatsOut(FromAttributes):
    tier: str
    members: int = Field(description="Seats used by members.")
    pending_invitations: int = Field(description="Seats held by pending invitations.")
    included: int | None = Field(description="Members the plan includes; null: no limit.")
    extra_seats: int = Field(description="Seats bought beyond the included members.")
    extra_seat_price: Decimal | None = Field(description="Monthly price of an extra seat; null: none sold.")
    extra_seats_cost: Decimal = Field(description="What the extra seats cost a month.")


class MemberUsageRow(BaseModel):
    user_id: int
    username: str
    email: str
    role: str
    credits_used: int = Field(description="Spent from the pool this period.")
    cap: int | None = Field(description="The member's cap this period (theirs, else the default); null: none.")


class OrgBillingOut(BaseModel):
    seats: SeatsOut
    period_start: Timestamp
    period_end: Timestamp
    members: list[MemberUsageRow]


async def _billing(db: Database, org_id: int, user: User, now: datetime) -> OrgBillingOut:
    async with db.transaction() as session:
        found = await usage.pool_billing(session, org_id=org_id, user_id=user.id, now=now)
    taken = found.seats
    return OrgBillingOut(
        seats=SeatsOut.model_validate(taken),
        period_start=found.period_start,
        period_end=found.period_end,
        members=[
            MemberUsageRow(
                user_id=v.user_id,
                username=v.username,
                email=v.email,
                role=v.role,
                credits_used=v.credits_used,
                cap=v.effective_cap,
            )
            for v in found.members
        ],
    )


@router.get(
    "/{org_id}/billing",
    response_model=OrgBillingOut,
    summary="Seats used and included, and each member's usage this period beside their cap (owner and admins)",
    responses=errors(*MEMBER_ROUTE),
)
async def billing(org_id: OrgId, user: CurrentUser, db: DatabaseDep, now: NowDep) -> OrgBillingOut:
    return await _billing(db, org_id, user, now)


def _cell(value: object) -> str:
    """A CSV cell a spreadsheet will not run as a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


@router.get(
    "/{org_id}/billing/usage.csv",
    response_class=Response,
    summary="Each member's usage this period beside their cap, as CSV (owner and admins)",
    responses={200: {"content": {"text/csv": {}}}, **errors(*MEMBER_ROUTE)},
)
async def usage_csv(org_id: OrgId, user: CurrentUser, db: DatabaseDep, now: NowDep) -> Response:
    out = await _billing(db, org_id, user, now)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["user_id", "username", "email", "role", "credits_used", "cap", "period_start", "period_end"])
    start, end = out.period_start.isoformat(), out.period_end.isoformat()
    for m in out.members:
        writer.writerow([m.user_id, _cell(m.username), _cell(m.email), m.role, m.credits_used, m.cap, start, end])
    name = f"organization-{org_id}-usage-{out.period_start.date().isoformat()}.csv"
    return Response(
        buffer.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
