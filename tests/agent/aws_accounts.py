"""Customers' AWS accounts on moto, with the trust policies AWS would enforce.

moto's STS lets anyone assume any role ARN (the role need not even exist). Real AWS
refuses unless the role exists and its trust policy allows the caller with the
external id it names. ``enforce_trust_policies`` makes moto's AssumeRole check both,
so tests see the refusals a wrong or missing external id gets from AWS.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

import boto3
import pytest
from moto.core.exceptions import AccessDeniedError
from moto.iam.models import iam_backends
from moto.sts.models import STSBackend

OPERATOR_ACCOUNT = "123456789012"  # moto's default account: the one our own credentials are in


def _denied(role_arn: str) -> AccessDeniedError:
    return AccessDeniedError(
        user_arn=f"arn:aws:iam::{OPERATOR_ACCOUNT}:user/devops-agent", action=f"sts:AssumeRole on resource: {role_arn}"
    )


def enforce_trust_policies(monkeypatch: pytest.MonkeyPatch) -> None:
    """AssumeRole succeeds only for an existing role whose trust policy's sts:ExternalId matches."""
    original = STSBackend.assume_role

    def assume_role(self: STSBackend, **kwargs: Any) -> Any:
        role_arn: str = kwargs["role_arn"]
        account, name = role_arn.split(":")[4], role_arn.rsplit("/", 1)[-1]
        roles = iam_backends[account]["aws"].roles.values()
        role = next((r for r in roles if r.name == name), None)
        if role is None:
            raise _denied(role_arn)
        statements = json.loads(role.assume_role_policy_document)["Statement"]
        wanted = {s.get("Condition", {}).get("StringEquals", {}).get("sts:ExternalId") for s in statements}
        if kwargs.get("external_id") not in wanted:
            raise _denied(role_arn)
        return original(self, **kwargs)

    monkeypatch.setattr(STSBackend, "assume_role", assume_role)


def create_customer_role(account_id: str, external_id: str, name: str = "DevOpsAgent") -> str:
    """The role a customer makes in their account (as the set-up guide says); returns its ARN."""
    iam = boto3.client("iam", region_name="us-east-1", aws_access_key_id="customer", aws_secret_access_key="customer")
    iam.meta.events.register(
        "before-sign", lambda request, **_: request.headers.__setitem__("x-moto-account-id", account_id)
    )
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{OPERATOR_ACCOUNT}:root"},
                "Action": "sts:AssumeRole",
                "Condition": {"StringEquals": {"sts:ExternalId": external_id}},
            }
        ],
    }
    with contextlib.suppress(iam.exceptions.NoSuchEntityException):
        iam.delete_role(RoleName=name)
    return str(iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(policy))["Role"]["Arn"])


def assumed_roles() -> list[tuple[str, str, str | None]]:
    """Every AssumeRole moto granted, as (role ARN, session name, external id)."""
    from moto.sts.models import sts_backends

    return [
        (r.role_arn, r.session_name, r.external_id)
        for account in sts_backends.values()
        for backend in account.values()
        for r in backend.assumed_roles
    ]
