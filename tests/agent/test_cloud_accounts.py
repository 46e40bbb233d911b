"""Each customer's own AWS account (CLOUD=aws), on moto's STS with several accounts, over HTTP.

Our operator credentials only call AssumeRole; every tool acts as the customer's role in
the customer's account, and moto here refuses AssumeRole as AWS does unless the role's
trust policy names the external id sent with it.
"""

from __future__ import annotations

import dataclasses
import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from fastapi import FastAPI

from devops_agent.agent.service import AgentRuntime
from devops_agent.agent.tools import build_toolbox
from devops_agent.agent.tools.aws import AwsCloud, SandboxCloud
from devops_agent.agent.tools.registry import CloudTarget, ToolError
from devops_agent.db import Database
from tests.agent.aws_accounts import assumed_roles, create_customer_role, enforce_trust_policies
from tests.orgs.test_api import join, pro
from tests.web.conftest import build_app, make_client, register


def _account() -> str:
    return str(random.randrange(10**11, 10**12))


@pytest.fixture
def aws_runtime(runtime: AgentRuntime, monkeypatch: pytest.MonkeyPatch) -> AgentRuntime:
    """CLOUD=aws against moto: the operator's own credentials are fake keys in moto's default account."""
    SandboxCloud._ensure_started()  # moto, in this process
    enforce_trust_policies(monkeypatch)
    operator = boto3.session.Session(
        aws_access_key_id="operator", aws_secret_access_key="operator", region_name="us-east-1"
    )
    return dataclasses.replace(runtime, toolbox=build_toolbox(AwsCloud("us-east-1", session=operator)))


@pytest.fixture
def app(db: Database, tmp_path: Path, aws_runtime: AgentRuntime) -> FastAPI:
    app = build_app(db, tmp_path)
    app.state.agent_runtime = aws_runtime
    return app


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(app) as c:
        yield c


async def _connect(client: httpx.AsyncClient, account: str, query: str = "") -> dict[str, Any]:
    external_id = (await client.get(f"/api/cloud/aws{query}")).json()["external_id"]
    role_arn = create_customer_role(account, external_id, name=f"DevOpsAgent-{uuid.uuid4().hex[:8]}")
    response = await client.put(f"/api/cloud/aws{query}", json={"role_arn": role_arn, "region": "us-east-1"})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _create_bucket(client: httpx.AsyncClient, name: str, **extra: Any) -> dict[str, Any]:
    proposed = (await client.post("/api/chat", json={"message": f"create a bucket named {name}", **extra})).json()
    [action] = proposed["pending_actions"]
    approved = await client.post(f"/api/chat/actions/{action['id']}/approve")
    assert approved.status_code == 200, approved.text
    reply: dict[str, Any] = approved.json()
    return reply


def _buckets_in(account: str) -> list[str]:
    s3 = boto3.client("s3", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    s3.meta.events.register(
        "before-sign", lambda request, **_: request.headers.__setitem__("x-moto-account-id", account)
    )
    return [b["Name"] for b in s3.list_buckets()["Buckets"]]


async def test_two_customers_act_only_in_their_own_accounts(app: FastAPI, client: httpx.AsyncClient) -> None:
    alice = await register(client)
    async with make_client(app) as bob_client:
        bob = await register(bob_client)
        before = (await client.get("/api/cloud/aws")).json()
        assert before == {
            "connected": False,
            "role_arn": None,
            "external_id": before["external_id"],
            "account_id": None,
            "region": None,
        }
        assert before["external_id"] != (await bob_client.get("/api/cloud/aws")).json()["external_id"]

        account_a, account_b = _account(), _account()
        a = await _connect(client, account_a)
        b = await _connect(bob_client, account_b)
        assert (a["connected"], a["account_id"], a["region"]) == (True, account_a, "us-east-1")
        assert a["external_id"] == before["external_id"]
        assert b["account_id"] == account_b

        bucket = f"alice-{uuid.uuid4().hex[:10]}"
        made = await _create_bucket(client, bucket)
        assert [(t["tool"], t["success"]) for t in made["tool_calls"]] == [("create_s3_bucket", True)]
        assert bucket in _buckets_in(account_a)
        assert bucket not in _buckets_in(account_b)
        assert bucket not in _buckets_in("123456789012")  # nothing in our own account

        bobs = (await bob_client.post("/api/chat", json={"message": "list S3 buckets"})).json()
        assert bobs["tool_calls"][0]["summary"] == "0 S3 buckets"
        alices = (await client.post("/api/chat", json={"message": "list S3 buckets"})).json()
        assert bucket in alices["response"]

        # Bob cannot borrow Alice's role: its trust policy names Alice's external id, not his.
        stolen = await bob_client.put("/api/cloud/aws", json={"role_arn": a["role_arn"], "region": "us-east-1"})
        assert (stolen.status_code, stolen.json()["error"]) == (400, "cloud_connection_failed")
        assert (await bob_client.get("/api/cloud/aws")).json()["account_id"] == account_b

    grants = [g for g in assumed_roles() if g[0] in (a["role_arn"], b["role_arn"])]
    assert {(arn, session) for arn, session, _ in grants} == {
        (a["role_arn"], f"devops-agent-user-{alice['id']}"),
        (b["role_arn"], f"devops-agent-user-{bob['id']}"),
    }
    assert all(ext == (a if arn == a["role_arn"] else b)["external_id"] for arn, _, ext in grants)


async def test_a_role_that_does_not_trust_the_external_id_is_refused(client: httpx.AsyncClient) -> None:
    await register(client)
    wrong = create_customer_role(_account(), "someone-elses-id", name=f"Wrong-{uuid.uuid4().hex[:8]}")
    response = await client.put("/api/cloud/aws", json={"role_arn": wrong, "region": "us-east-1"})
    assert (response.status_code, response.json()["error"]) == (400, "cloud_connection_failed")
    assert "AccessDenied" in response.json()["message"]
    assert "sts:AssumeRole" in response.json()["message"]
    bad = await client.put("/api/cloud/aws", json={"role_arn": "not-an-arn", "region": "us-east-1"})
    assert (bad.status_code, bad.json()["error"]) == (400, "cloud_connection_failed")
    assert (await client.get("/api/cloud/aws")).json()["connected"] is False


async def test_without_a_connection_the_agent_says_how_and_charges_nothing(client: httpx.AsyncClient) -> None:
    await register(client)
    reply = (await client.post("/api/chat", json={"message": "list S3 buckets"})).json()
    assert "No AWS account is connected" in reply["response"]
    assert (reply["credits_used"], reply["credits_remaining"], reply["tool_calls"]) == (0, 20, [])

    await _connect(client, _account())
    listed = (await client.post("/api/chat", json={"message": "list S3 buckets"})).json()
    assert listed["credits_used"] == 2
    assert (await client.delete("/api/cloud/aws")).status_code == 204
    assert (await client.get("/api/cloud/aws")).json()["connected"] is False
    after = (await client.post("/api/chat", json={"message": "list S3 buckets"})).json()
    assert (after["credits_used"], "No AWS account is connected" in after["response"]) == (0, True)


async def test_a_team_has_its_own_connection_set_by_its_owner_or_admins(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await pro(client)
    org = (await client.post("/api/orgs", json={"name": "Cloudy"})).json()["organization"]
    query = f"?org_id={org['id']}"
    async with make_client(app) as dev_client, make_client(app) as stranger_client:
        dev = await register(dev_client)
        await register(stranger_client)
        await join(client, org["id"], dev_client, dev)
        team_account = _account()
        team = await _connect(client, team_account, query)
        assert team["account_id"] == team_account
        assert (await client.get("/api/cloud/aws")).json()["connected"] is False  # the owner's own: separate

        refused = await dev_client.put(f"/api/cloud/aws{query}", json={"role_arn": team["role_arn"]})
        assert (refused.status_code, refused.json()["error"]) == (403, "forbidden")
        assert (await dev_client.delete(f"/api/cloud/aws{query}")).status_code == 403
        assert (await stranger_client.get(f"/api/cloud/aws{query}")).status_code == 404
        assert (await dev_client.get(f"/api/cloud/aws{query}")).json()["account_id"] == team_account

        bucket = f"team-{uuid.uuid4().hex[:10]}"
        await _create_bucket(dev_client, bucket, org_id=org["id"])
        assert bucket in _buckets_in(team_account)
        personal = (await dev_client.post("/api/chat", json={"message": "list S3 buckets"})).json()
        assert "No AWS account is connected" in personal["response"]


def test_temporary_credentials_are_reused_until_shortly_before_they_expire(monkeypatch: pytest.MonkeyPatch) -> None:
    SandboxCloud._ensure_started()
    enforce_trust_policies(monkeypatch)
    account, external_id = _account(), f"ext-{uuid.uuid4().hex}"
    role_arn = create_customer_role(account, external_id, name=f"Cache-{uuid.uuid4().hex[:8]}")
    now = [datetime.now(UTC)]
    operator = boto3.session.Session(aws_access_key_id="operator", aws_secret_access_key="operator")
    cloud = AwsCloud("us-east-1", session=operator, clock=lambda: now[0])
    target = CloudTarget(7, role_arn=role_arn, external_id=external_id, region="us-east-1")

    def grants() -> int:
        return sum(1 for arn, _, _ in assumed_roles() if arn == role_arn)

    first = cloud.clients_for(target)
    assert cloud.clients_for(target) is first
    now[0] += timedelta(minutes=50)  # the credentials last an hour: still more than 5 minutes left
    assert cloud.clients_for(target) is first
    assert grants() == 1
    now[0] += timedelta(minutes=6)  # under 5 minutes left: assume the role again
    assert cloud.clients_for(target) is not first
    assert grants() == 2
    # A missing connection never falls back to our own credentials.
    with pytest.raises(ToolError, match="No AWS account is connected"):
        cloud.clients_for(CloudTarget(7))
