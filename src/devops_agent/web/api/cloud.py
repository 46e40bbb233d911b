"""The customer's own AWS account: ``GET/PUT/DELETE /api/cloud/aws``.

``?org_id=`` addresses a team's connection (members read it; its owner and admins
change it). The PUT waits on AWS (AssumeRole, GetCallerIdentity), so it takes the
``Database`` and the service keeps its transactions short around that call.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import ConfigDict

from devops_agent.agent import cloud_accounts
from devops_agent.web.api import AUTHED, errors
from devops_agent.web.api.chat import RuntimeDep
from devops_agent.web.deps import CurrentUser, DatabaseDep, NowDep
from devops_agent.web.schemas import Strict

router = APIRouter(prefix="/api/cloud", tags=["cloud"])

OrgQuery = Annotated[int | None, Query(ge=1, le=2**62, description="A team's connection instead of your own.")]


class AwsConnectionOut(Strict):
    model_config = ConfigDict(from_attributes=True)

    connected: bool
    role_arn: str | None
    external_id: str
    account_id: str | None
    region: str | None


class AwsConnectionIn(Strict):
    role_arn: str
    region: str = "us-east-1"


@router.get(
    "/aws",
    response_model=AwsConnectionOut,
    summary="Your AWS connection, with the external id your role's trust policy needs",
    responses=errors(*AUTHED, 404),
)
async def get_aws(user: CurrentUser, db: DatabaseDep, now: NowDep, org_id: OrgQuery = None) -> AwsConnectionOut:
    view = await cloud_accounts.get_connection(db, user_id=user.id, org_id=org_id, now=now)
    return AwsConnectionOut.model_validate(view)


@router.put(
    "/aws",
    response_model=AwsConnectionOut,
    summary="Connect an IAM role of your AWS account (verified by assuming it with your external id)",
    responses=errors(*AUTHED, 400, 403, 404),
)
async def put_aws(
    body: AwsConnectionIn,
    user: CurrentUser,
    db: DatabaseDep,
    runtime: RuntimeDep,
    now: NowDep,
    org_id: OrgQuery = None,
) -> AwsConnectionOut:
    view = await cloud_accounts.connect(
        db,
        runtime.toolbox.cloud,
        user_id=user.id,
        org_id=org_id,
        role_arn=body.role_arn,
        region=body.region,
        now=now,
    )
    return AwsConnectionOut.model_validate(view)


@router.delete(
    "/aws",
    status_code=204,
    summary="Disconnect your AWS account (the agent stops acting there)",
    responses=errors(*AUTHED, 403, 404),
)
async def delete_aws(user: CurrentUser, db: DatabaseDep, org_id: OrgQuery = None) -> Response:
    await cloud_accounts.disconnect(db, user_id=user.id, org_id=org_id)
    return Response(status_code=204)
