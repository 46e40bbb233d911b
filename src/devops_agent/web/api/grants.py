"""Credit grants over HTTP: a customer's active grants, and an administrator's promotional grant.

* ``GET /api/credits/grants``: the grants the customer's credits come from that still
  have credits, in the order they will be spent (``billing.active_grants``); with
  ``org_id`` a member reads the team pool's, like ``GET /api/credits/ledger``.
* ``POST /api/admin/users/{user_id}/grants`` and ``POST /api/admin/orgs/{org_id}/grants``:
  promotional credits (cost basis 0), optionally expiring, with a required reason;
  audited (``billing.audit.grant_credits``) and replayed for a retried ``Idempotency-Key``.

Every bad body of the admin routes is 400 ``invalid_request``, as the contract says:
one the schema refuses (with ``details``) like one the engine refuses (a past expiry).
``expires_at`` must carry its time zone (``2026-12-31T23:59:59Z``): a time without one
is refused rather than guessed, since the contract's timestamps always have an offset.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, status
from pydantic import AwareDatetime, BaseModel, Field

from devops_agent import billing
from devops_agent.billing import audit, orgs
from devops_agent.billing.adjustments import MAX_PROMOTIONAL_GRANT
from devops_agent.web.api import AUTHED, errors
from devops_agent.web.deps import AdminUser, CurrentUser, IdempotencyKeyDep, NowDep, SessionDep
from devops_agent.web.errors import ApiError, InvalidRequestOnInvalidBody
from devops_agent.web.schemas import GrantOut, Strict

router = APIRouter(prefix="/api/credits", tags=["credits"])
admin_router = APIRouter(prefix="/api/admin", tags=["admin"], route_class=InvalidRequestOnInvalidBody)

OrgParam = Annotated[int | None, Query(ge=1, le=2**62, description="A team pool you belong to.")]
UserId = Annotated[int, Path(ge=1, le=2**62, description="A user's id.")]
OrgId = Annotated[int, Path(ge=1, le=2**62, description="An organization's id.")]
# Everything an admin's grant can answer: no 422 (a bad body is 400 here), no 402 (it spends nothing).
GRANT_ERRORS = errors(400, 401, 403, 404, 413)


class GrantsOut(BaseModel):
    grants: list[GrantOut]


@router.get(
    "/grants",
    response_model=GrantsOut,
    summary="Your grants with credits left (or a team pool's), in the order they will be spent",
    responses=errors(*AUTHED, 404),
)
async def grants(user: CurrentUser, session: SessionDep, now: NowDep, org_id: OrgParam = None) -> GrantsOut:
    if org_id is not None:
        await orgs.get_organization(session, org_id=org_id, user_id=user.id)  # 404 unless a member
    found = await billing.active_grants(
        session, user_id=None if org_id is not None else user.id, org_id=org_id, now=now
    )
    return GrantsOut(grants=[GrantOut.model_validate(g) for g in found])


class GrantIn(Strict):
    credits: Annotated[int, Field(ge=1, le=MAX_PROMOTIONAL_GRANT, description="Promotional credits to give.")]
    expires_at: AwareDatetime | None = Field(
        default=None, description="When what is left of them expires, with its time zone (in the future); null: never."
    )
    reason: Annotated[
        str, Field(min_length=3, max_length=500, description="Why: kept on the grant, in the ledger and the audit log.")
    ]


class GrantCreatedOut(BaseModel):
    grant: GrantOut


async def _grant(
    session: SessionDep,
    admin: AdminUser,
    body: GrantIn,
    now: NowDep,
    idempotency_key: str | None,
    *,
    user_id: int | None = None,
    org_id: int | None = None,
) -> GrantCreatedOut:
    granted = await audit.grant_credits(
        session,
        admin_id=admin.id,
        user_id=user_id,
        org_id=org_id,
        credits=body.credits,
        reason=body.reason,
        expires_at=body.expires_at,
        now=now,
        idempotency_key=idempotency_key,
    )
    if granted is None:
        if org_id is not None:
            raise ApiError(404, "organization_not_found", f"There is no organization {org_id}.")
        raise ApiError(404, "user_not_found", f"There is no user {user_id}.")
    return GrantCreatedOut(grant=GrantOut.model_validate(granted.grant))


@admin_router.post(
    "/users/{user_id}/grants",
    status_code=status.HTTP_201_CREATED,
    response_model=GrantCreatedOut,
    summary="Give a user promotional credits, optionally expiring, with a required reason (audited)",
    responses=GRANT_ERRORS,
)
async def grant_to_user(
    user_id: UserId,
    body: GrantIn,
    admin: AdminUser,
    session: SessionDep,
    now: NowDep,
    idempotency_key: IdempotencyKeyDep,
) -> GrantCreatedOut:
    return await _grant(session, admin, body, now, idempotency_key, user_id=user_id)


@admin_router.post(
    "/orgs/{org_id}/grants",
    status_code=status.HTTP_201_CREATED,
    response_model=GrantCreatedOut,
    summary="Give an organization's pool promotional credits, optionally expiring, with a required reason (audited)",
    responses=GRANT_ERRORS,
)
async def grant_to_org(
    org_id: OrgId,
    body: GrantIn,
    admin: AdminUser,
    session: SessionDep,
    now: NowDep,
    idempotency_key: IdempotencyKeyDep,
) -> GrantCreatedOut:
    return await _grant(session, admin, body, now, idempotency_key, org_id=org_id)
