"""API keys for scripts (plan feature ``api_access``): create (secret shown once), list, revoke.

Creating a key needs the feature; listing and revoking do not, so a user who moved
to a plan without it can still clean up. Keys of a plan without the feature stop
authenticating (``deps._user_from_key``) and start again after an upgrade.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status
from pydantic import BaseModel, Field
from sqlalchemy import func, select

from devops_agent.web.api import AUTHED, errors
from devops_agent.web.deps import API_ACCESS, CurrentUser, NowDep, SessionDep, feature_refusal, user_has_feature
from devops_agent.web.errors import ApiError
from devops_agent.web.models import ApiKey
from devops_agent.web.schemas import FromAttributes, Strict, Timestamp
from devops_agent.web.security import new_api_key

router = APIRouter(prefix="/api/keys", tags=["api keys"])

MAX_ACTIVE_KEYS = 20


class ApiKeyIn(Strict):
    name: Annotated[str, Field(min_length=1, max_length=64)] = "default"


class ApiKeyOut(FromAttributes):
    id: int
    name: str
    prefix: str
    created_at: Timestamp
    last_used_at: Timestamp | None
    revoked_at: Timestamp | None


class ApiKeyCreatedOut(BaseModel):
    key: ApiKeyOut
    secret: str = Field(description="The API key itself. Shown once: only its hash is stored.")


class ApiKeysOut(BaseModel):
    keys: list[ApiKeyOut]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ApiKeyCreatedOut,
    summary="Create an API key (its secret is shown only in this response)",
    responses=errors(*AUTHED, 409),
)
async def create_key(body: ApiKeyIn, user: CurrentUser, session: SessionDep, now: NowDep) -> ApiKeyCreatedOut:
    if not await user_has_feature(session, user.id, API_ACCESS, now=now):
        raise await feature_refusal(session, API_ACCESS)
    active = await session.scalar(
        select(func.count()).select_from(ApiKey).where(ApiKey.user_id == user.id, ApiKey.revoked_at.is_(None))
    )
    if (active or 0) >= MAX_ACTIVE_KEYS:
        raise ApiError(409, "conflict", f"You already have {MAX_ACTIVE_KEYS} active keys; revoke one first.")
    new = new_api_key()
    key = ApiKey(
        user_id=user.id, name=body.name.strip() or "default", prefix=new.prefix, key_hash=new.key_hash, created_at=now
    )
    session.add(key)
    await session.flush()
    return ApiKeyCreatedOut(key=ApiKeyOut.model_validate(key), secret=new.secret)


@router.get("", response_model=ApiKeysOut, summary="Your API keys (never their secrets)", responses=errors(*AUTHED))
async def list_keys(user: CurrentUser, session: SessionDep) -> ApiKeysOut:
    keys = (await session.execute(select(ApiKey).where(ApiKey.user_id == user.id).order_by(ApiKey.id.desc()))).scalars()
    return ApiKeysOut(keys=[ApiKeyOut.model_validate(k) for k in keys])


@router.delete(
    "/{key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Revoke an API key at once",
    responses=errors(*AUTHED, 404),
)
async def revoke_key(
    key_id: Annotated[int, Path(ge=1, le=2**63 - 1)], user: CurrentUser, session: SessionDep, now: NowDep
) -> Response:
    key = (
        await session.execute(select(ApiKey).where(ApiKey.id == key_id, ApiKey.user_id == user.id))
    ).scalar_one_or_none()
    if key is None:  # another user's key is "not found" too: we do not confirm it exists
        raise ApiError(404, "api_key_not_found", "No such API key.")
    if key.revoked_at is None:
        key.revoked_at = now
    return Response(status_code=status.HTTP_204_NO_CONTENT)
