"""Each customer's own AWS account: the role they connect, and where the agent acts for them.

A customer (a user, or a team through its owner and admins) creates an IAM role in
their own account that trusts ours, with the external id we generate for them (shown
before they connect: the role's trust policy needs it). The agent then acts only as
that role, through ``sts:AssumeRole`` with the external id and a session name naming
the user; our own credentials serve for AssumeRole alone.

``PUT /api/cloud/aws`` verifies a role by assuming it and asking ``sts:GetCallerIdentity``
before anything is stored; the call to AWS runs outside any transaction.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from devops_agent.billing import orgs
from devops_agent.billing.errors import OrgForbidden
from devops_agent.billing.org_models import MemberRole
from devops_agent.db import Database

from .cloud_models import AwsConnection
from .service import AgentError
from .tools.registry import Cloud, CloudTarget, ToolError

ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")
REGION = re.compile(r"^[a-z]{2}(?:-[a-z]+)+-\d{1,2}$")

# The permissions the seven tools need in the customer's account, and nothing more.
PERMISSIONS_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Sid": "DevOpsAgentTools",
            "Effect": "Allow",
            "Action": [
                "ec2:DescribeInstances",
                "ec2:RunInstances",
                "ec2:CreateTags",
                "ec2:StopInstances",
                "ssm:GetParameter",
                "rds:DescribeDBInstances",
                "rds:CreateDBInstance",
                "s3:ListAllMyBuckets",
                "s3:CreateBucket",
            ],
            "Resource": "*",
        },
        {
            "Sid": "RdsManagedPassword",
            "Effect": "Allow",
            "Action": ["secretsmanager:CreateSecret", "secretsmanager:TagResource", "kms:DescribeKey"],
            "Resource": "*",
        },
    ],
}


class CloudConnectionFailed(AgentError):
    code = "cloud_connection_failed"
    status = 400


@dataclass(frozen=True)
class ConnectionView:
    """The contract's body of ``GET /api/cloud/aws``."""

    connected: bool
    role_arn: str | None
    external_id: str
    account_id: str | None
    region: str | None


def trust_policy(operator_principal: str, external_id: str) -> dict[str, object]:
    """The trust policy a customer pastes on their role: our account may assume it with their external id."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": operator_principal},
                "Action": "sts:AssumeRole",
                "Condition": {"StringEquals": {"sts:ExternalId": external_id}},
            }
        ],
    }


def _owner(user_id: int, org_id: int | None) -> object:
    return AwsConnection.organization_id == org_id if org_id is not None else AwsConnection.user_id == user_id


async def _row(session: AsyncSession, *, user_id: int, org_id: int | None) -> AwsConnection | None:
    return (await session.execute(select(AwsConnection).where(_owner(user_id, org_id)))).scalar_one_or_none()  # type: ignore[arg-type]


async def _check_access(session: AsyncSession, *, user_id: int, org_id: int | None, manage: bool) -> None:
    """A team's connection: members see it, the owner and admins change it (404 for non-members)."""
    if org_id is None:
        return
    member = await orgs.membership(session, org_id=org_id, user_id=user_id)
    if manage and member.role not in (MemberRole.OWNER.value, MemberRole.ADMIN.value):
        raise OrgForbidden("Only admins and the owner of the organization can change its AWS connection.")


async def _ensure(session: AsyncSession, *, user_id: int, org_id: int | None, now: datetime) -> AwsConnection:
    row = await _row(session, user_id=user_id, org_id=org_id)
    if row is None:
        row = AwsConnection(
            user_id=None if org_id is not None else user_id,
            organization_id=org_id,
            external_id=f"da-{secrets.token_urlsafe(24)}",
            created_at=now,
        )
        session.add(row)
        await session.flush()
    return row


def _view(row: AwsConnection) -> ConnectionView:
    return ConnectionView(
        connected=row.role_arn is not None,
        role_arn=row.role_arn,
        external_id=row.external_id,
        account_id=row.account_id,
        region=row.region,
    )


async def get_connection(db: Database, *, user_id: int, org_id: int | None, now: datetime) -> ConnectionView:
    """The connection (made with its external id on first sight, so the trust policy can name it)."""
    async with db.transaction() as session:
        await _check_access(session, user_id=user_id, org_id=org_id, manage=False)
        return _view(await _ensure(session, user_id=user_id, org_id=org_id, now=now))


async def connect(
    db: Database, cloud: Cloud, *, user_id: int, org_id: int | None, role_arn: str, region: str, now: datetime
) -> ConnectionView:
    """Verify the role by assuming it (AssumeRole + GetCallerIdentity), then keep it."""
    if not ROLE_ARN.fullmatch(role_arn):
        raise CloudConnectionFailed("role_arn must look like arn:aws:iam::123456789012:role/DevOpsAgent.")
    if not REGION.fullmatch(region):
        raise CloudConnectionFailed("region must be an AWS region such as us-east-1.")
    async with db.transaction() as session:
        await _check_access(session, user_id=user_id, org_id=org_id, manage=True)
        external_id = (await _ensure(session, user_id=user_id, org_id=org_id, now=now)).external_id
    target = CloudTarget(user_id, org_id, role_arn=role_arn, external_id=external_id, region=region)
    try:
        account_id = await asyncio.to_thread(cloud.verify, target)
    except ToolError as exc:
        raise CloudConnectionFailed(exc.message) from exc
    async with db.transaction() as session:
        row = await _ensure(session, user_id=user_id, org_id=org_id, now=now)
        row.role_arn, row.account_id, row.region, row.connected_at = role_arn, account_id, region, now
        return _view(row)


async def disconnect(db: Database, *, user_id: int, org_id: int | None) -> None:
    """Forget the role (the external id stays, so the same role can be connected again)."""
    async with db.transaction() as session:
        await _check_access(session, user_id=user_id, org_id=org_id, manage=True)
        row = await _row(session, user_id=user_id, org_id=org_id)
        if row is not None:
            row.role_arn = row.account_id = row.region = row.connected_at = None
