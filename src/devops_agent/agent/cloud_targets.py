"""Where a chat acts: the cloud account of the user (or of the team whose workspace it is).

Kept apart from ``cloud_accounts`` (which manages connections over HTTP) because the chat
service reads it on every message and must not import the HTTP-facing errors.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from .cloud_models import AwsConnection
from .tools.registry import Cloud, CloudTarget


async def target_for(session: AsyncSession, cloud: Cloud, *, user_id: int, org_id: int | None) -> CloudTarget | None:
    """Where a chat of the user (in a team's workspace with ``org_id``) acts; None: not connected.

    The sandbox needs no connection: every user and team has an account of its own in it.
    """
    if not cloud.needs_connection:
        return CloudTarget(user_id, org_id, region=cloud.region)
    owner = AwsConnection.organization_id == org_id if org_id is not None else AwsConnection.user_id == user_id
    row = (await session.execute(select(AwsConnection).where(owner))).scalar_one_or_none()
    if row is None or row.role_arn is None:
        return None
    return CloudTarget(user_id, org_id, role_arn=row.role_arn, external_id=row.external_id, region=row.region)


HOW_TO_CONNECT = (
    "No AWS account is connected{where}, so I cannot act on AWS yet, and this message cost nothing. "
    'Connect one on your account page (/account, section "Your AWS account"): create an IAM role in your '
    "AWS account that trusts DevOps Agent with your external id, give it the permissions listed there, "
    "and paste its ARN."
)


def how_to_connect(org_id: int | None) -> str:
    """The reply to a chat that cannot act because its account has no AWS connection."""
    return HOW_TO_CONNECT.format(where=" for this team" if org_id is not None else "")
