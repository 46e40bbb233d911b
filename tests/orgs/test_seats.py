"""Seats on plans, and each member's usage for the owner: over HTTP, on SQLite and PostgreSQL.

The catalog (``pricing.toml``) gives Free 5 members and no extra seats, Professional 5
members and extra seats at $15.00.
"""

from __future__ import annotations

import asyncio
import csv
import io
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import update

from devops_agent.billing.models import SubscriptionTier
from tests.orgs.test_api import pro, spend
from tests.web.conftest import CSRF_COOKIE, PASSWORD, make_client, register


async def invite(owner: httpx.AsyncClient, org_id: int, email: str) -> httpx.Response:
    return await owner.post(f"/api/orgs/{org_id}/invitations", json={"email": email})


async def members_join(app: FastAPI, owner: httpx.AsyncClient, org_id: int, n: int) -> list[dict[str, Any]]:
    joined = []
    for _ in range(n):
        async with make_client(app) as client:
            user = await register(client)
            made = await invite(owner, org_id, user["email"])
            assert made.status_code == 201, made.text
            accepted = await client.post("/api/orgs/invitations/accept", json={"token": made.json()["token"]})
            assert accepted.status_code == 200, accepted.text
            joined.append(user)
    return joined


async def billing(owner: httpx.AsyncClient, org_id: int) -> dict[str, Any]:
    response = await owner.get(f"/api/orgs/{org_id}/billing")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_a_plan_without_extra_seats_refuses_the_member_beyond_its_seats(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await pro(client, "boss")
    org_id = (await client.post("/api/orgs", json={"name": "Ops"})).json()["organization"]["id"]  # on Free: 5
    await members_join(app, client, org_id, 3)
    pending = await invite(client, org_id, "pending@example.com")  # the fifth seat, held by the invitation
    assert pending.status_code == 201

    refused = await invite(client, org_id, "sixth@example.com")
    assert refused.status_code == 402
    assert refused.json() | {"message": ""} == {
        "error": "seat_limit_reached",
        "message": "",
        "included": 5,
        "used": 5,
    }
    seats = (await billing(client, org_id))["seats"]
    assert (seats["members"], seats["pending_invitations"], seats["included"], seats["extra_seats"]) == (4, 1, 5, 0)

    # Revoking the pending invitation frees its seat.
    await client.delete(f"/api/orgs/{org_id}/invitations/{pending.json()['invitation']['id']}")
    assert (await invite(client, org_id, "sixth@example.com")).status_code == 201


async def test_a_plan_with_extra_seats_adds_a_paid_seat(app: FastAPI, client: httpx.AsyncClient) -> None:
    await pro(client, "boss")
    org_id = (await client.post("/api/orgs", json={"name": "Ops"})).json()["organization"]["id"]
    tiers = (await client.get(f"/api/orgs/{org_id}/subscription")).json()["available_tiers"]
    pro_id = next(t["id"] for t in tiers if t["name"] == "professional")
    assert (await client.post(f"/api/orgs/{org_id}/subscription/upgrade", json={"tier_id": pro_id})).status_code == 200

    await members_join(app, client, org_id, 6)  # 7 members: 5 included, 2 bought
    seats = (await billing(client, org_id))["seats"]
    assert seats == {
        "tier": "Professional",
        "members": 7,
        "pending_invitations": 0,
        "included": 5,
        "extra_seats": 2,
        "extra_seat_price": "15.00",
        "extra_seats_cost": "30.00",
    }


async def test_a_seat_bought_for_a_member_is_given_back_when_members_leave(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await pro(client, "boss")
    org_id = (await client.post("/api/orgs", json={"name": "Ops"})).json()["organization"]["id"]
    tiers = (await client.get(f"/api/orgs/{org_id}/subscription")).json()["available_tiers"]
    pro_id = next(t["id"] for t in tiers if t["name"] == "professional")
    assert (await client.post(f"/api/orgs/{org_id}/subscription/upgrade", json={"tier_id": pro_id})).status_code == 200
    joined = await members_join(app, client, org_id, 6)  # 7 members: 5 included, 2 bought

    removed = await client.delete(f"/api/orgs/{org_id}/members/{joined[0]['id']}")
    assert removed.status_code == 204, removed.text
    seats = (await billing(client, org_id))["seats"]
    assert (seats["members"], seats["extra_seats"], seats["extra_seats_cost"]) == (6, 1, "15.00")

    async with make_client(app) as leaver:  # leaving gives the seat back too
        logged_in = await leaver.post("/api/auth/login", json={"username": joined[1]["username"], "password": PASSWORD})
        assert logged_in.status_code == 200, logged_in.text
        leaver.headers["X-CSRF-Token"] = leaver.cookies[CSRF_COOKIE]
        assert (await leaver.delete(f"/api/orgs/{org_id}/members/{joined[1]['id']}")).status_code == 204
    seats = (await billing(client, org_id))["seats"]
    assert (seats["members"], seats["extra_seats"], seats["extra_seats_cost"]) == (5, 0, "0.00")

    await client.delete(f"/api/orgs/{org_id}/members/{joined[2]['id']}")  # within the plan's: nothing to give back
    await members_join(app, client, org_id, 2)  # 6 members: one seat bought again
    seats = (await billing(client, org_id))["seats"]
    assert (seats["members"], seats["extra_seats"]) == (6, 1)


async def test_a_plan_that_includes_more_members_gives_the_bought_seats_back(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await pro(client, "boss")
    org_id = (await client.post("/api/orgs", json={"name": "Ops"})).json()["organization"]["id"]
    tiers = {
        t["name"]: t["id"] for t in (await client.get(f"/api/orgs/{org_id}/subscription")).json()["available_tiers"]
    }
    upgrade = f"/api/orgs/{org_id}/subscription/upgrade"
    assert (await client.post(upgrade, json={"tier_id": tiers["professional"]})).status_code == 200
    await members_join(app, client, org_id, 6)  # 7 members: 5 included, 2 bought

    assert (await client.post(upgrade, json={"tier_id": tiers["business"]})).status_code == 200  # 20 included
    seats = (await billing(client, org_id))["seats"]
    assert (seats["tier"], seats["members"], seats["included"], seats["extra_seats"]) == ("Business", 7, 20, 0)


async def test_two_invitees_racing_for_the_last_seat_let_one_in(app: FastAPI, client: httpx.AsyncClient) -> None:
    await pro(client, "boss")
    org_id = (await client.post("/api/orgs", json={"name": "Ops"})).json()["organization"]["id"]
    async with make_client(app) as first, make_client(app) as second:
        guests = [await register(first), await register(second)]
        tokens = [(await invite(client, org_id, g["email"])).json()["token"] for g in guests]
        # The plan shrinks after the invitations went out: room for one more member only.
        async with app.state.db.transaction() as session:
            await session.execute(
                update(SubscriptionTier).where(SubscriptionTier.name == "free").values(included_members=2)
            )
        answers = await asyncio.gather(
            *(
                c.post("/api/orgs/invitations/accept", json={"token": t})
                for c, t in zip((first, second), tokens, strict=True)
            )
        )
    assert sorted(a.status_code for a in answers) == [200, 402]
    assert (await billing(client, org_id))["seats"]["members"] == 2


async def test_the_owner_sees_each_members_usage_beside_their_cap_with_a_csv(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await pro(client, "boss")
    org_id = (await client.post("/api/orgs", json={"name": "Ops"})).json()["organization"]["id"]
    dev, ops = await members_join(app, client, org_id, 2)
    await client.put(f"/api/orgs/{org_id}/members/{dev['id']}/cap", json={"monthly_cap": 10})
    await client.put(f"/api/orgs/{org_id}/default-cap", json={"monthly_cap": 8})
    await spend(app, dev["id"], org_id, amount=3)
    await spend(app, ops["id"], org_id, tool="ec2_list_instances", amount=2)

    body = await billing(client, org_id)
    rows = {m["username"]: (m["credits_used"], m["cap"]) for m in body["members"]}
    assert rows == {"boss": (0, 8), dev["username"]: (3, 10), ops["username"]: (2, 8)}

    response = await client.get(f"/api/orgs/{org_id}/billing/usage.csv")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    table = list(csv.DictReader(io.StringIO(response.text)))
    assert {r["username"]: (r["credits_used"], r["cap"]) for r in table} == {
        "boss": ("0", "8"),
        dev["username"]: ("3", "10"),
        ops["username"]: ("2", "8"),
    }
    assert {r["period_start"] for r in table} == {body["period_start"].replace("Z", "+00:00")}

    # A member sees neither; a stranger is told the organization does not exist.
    async with make_client(app) as member, make_client(app) as stranger:
        user = await register(member)
        made = await invite(client, org_id, user["email"])
        await member.post("/api/orgs/invitations/accept", json={"token": made.json()["token"]})
        await register(stranger)
        for path in (f"/api/orgs/{org_id}/billing", f"/api/orgs/{org_id}/billing/usage.csv"):
            assert (await member.get(path)).status_code == 403
            assert (await stranger.get(path)).status_code == 404
