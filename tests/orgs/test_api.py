"""The organizations' HTTP endpoints: the team story, role checks on every route, invitations.

Agent actions are charged through the credits engine as the chat endpoint does
(``billing.charge`` with ``org_id``); the chat's own plumbing has its test with the agent.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import update

from devops_agent import billing
from devops_agent.billing.models import ActionType, User
from tests.web.conftest import make_client, register


async def pro(client: httpx.AsyncClient, username: str | None = None) -> dict[str, Any]:
    """A registered user moved to Professional (team collaboration), demo payments."""
    user = await register(client, username)
    tiers = (await client.get("/api/subscription/tiers")).json()["tiers"]
    tier_id = next(t["id"] for t in tiers if t["name"] == "professional")
    assert (await client.post("/api/subscription/upgrade", json={"tier_id": tier_id})).status_code == 200
    return user


async def spend(app: FastAPI, user_id: int, org_id: int, *, tool: str | None = None, amount: int = 1) -> None:
    now: datetime = app.state.clock()
    async with app.state.db.transaction() as session:
        await billing.charge(
            session,
            user_id=user_id,
            org_id=org_id,
            amount=amount,
            action_type=ActionType.TOOL_USE if tool else ActionType.AGENT_MESSAGE,
            tool_name=tool,
            now=now,
        )


async def join(owner: httpx.AsyncClient, org_id: int, client: httpx.AsyncClient, user: dict[str, Any]) -> None:
    made = await owner.post(f"/api/orgs/{org_id}/invitations", json={"email": user["email"]})
    assert made.status_code == 201, made.text
    accepted = await client.post("/api/orgs/invitations/accept", json={"token": made.json()["token"]})
    assert accepted.status_code == 200, accepted.text


async def test_a_team_shares_a_pool_and_the_owner_sees_who_used_it(app: FastAPI, client: httpx.AsyncClient) -> None:
    owner = await pro(client, "teamowner")
    created = await client.post("/api/orgs", json={"name": "Platform team"})
    assert created.status_code == 201, created.text
    org = created.json()["organization"]
    assert (org["role"], org["credits_remaining"], org["tier"]["name"], org["member_count"]) == ("owner", 20, "free", 1)

    # The owner pays for the team: Professional and a pack, into the pool, not their own account.
    tiers = (await client.get(f"/api/orgs/{org['id']}/subscription")).json()["available_tiers"]
    pro_id = next(t["id"] for t in tiers if t["name"] == "professional")
    upgraded = await client.post(f"/api/orgs/{org['id']}/subscription/upgrade", json={"tier_id": pro_id})
    assert upgraded.json()["subscription"]["credits_remaining"] == 1000
    bought = await client.post(f"/api/orgs/{org['id']}/credits/purchase", json={"pack_size": 100})
    assert bought.json()["credits_remaining"] == 1100
    assert (await client.get("/api/subscription")).json()["subscription"]["credits_remaining"] == 1000

    async with make_client(app) as dev_client:
        dev = await register(dev_client, "teamdev")
        invited = await client.post(f"/api/orgs/{org['id']}/invitations", json={"email": "TeamDev@example.com"})
        assert invited.status_code == 201
        assert invited.json()["accept_url"].endswith("/orgs/join/" + invited.json()["token"])
        preview = await dev_client.get(f"/api/orgs/invitations/{invited.json()['token']}")
        assert preview.json()["organization_name"] == "Platform team"
        joined = await dev_client.post("/api/orgs/invitations/accept", json={"token": invited.json()["token"]})
        assert joined.json()["organization"]["role"] == "member"
        assert [o["name"] for o in (await dev_client.get("/api/orgs")).json()["organizations"]] == ["Platform team"]

        capped = await client.put(f"/api/orgs/{org['id']}/members/{dev['id']}/cap", json={"monthly_cap": 10})
        assert capped.status_code == 200
        await spend(app, dev["id"], org["id"])
        await spend(app, dev["id"], org["id"], tool="create_ec2_instance", amount=5)
        await spend(app, dev["id"], org["id"], tool="get_ec2_instances")

        # The member sees the pool and their own use, nobody else's.
        mine = (await dev_client.get(f"/api/orgs/{org['id']}/usage/stats")).json()
        assert mine["credits_remaining"] == 1093
        assert [(m["username"], m["credits_used"], m["cap"]) for m in mine["members"]] == [("teamdev", 7, 10)]
        members = (await dev_client.get(f"/api/orgs/{org['id']}/members")).json()["members"]
        assert {m["username"]: m["credits_used"] for m in members} == {"teamowner": None, "teamdev": 7}
        # The member's personal pool is untouched.
        assert (await dev_client.get("/api/subscription")).json()["subscription"]["credits_remaining"] == 20
        assert (await dev_client.get("/api/usage/history")).json()["total"] == 0
        assert (await dev_client.get("/api/usage/stats")).json()["tool_usage_breakdown"] == []

    # The owner sees everyone's, per member and per tool.
    await spend(app, owner["id"], org["id"])
    stats = (await client.get(f"/api/orgs/{org['id']}/usage/stats")).json()
    assert stats["credits_used_this_month"] == 8
    per_member = {
        m["username"]: (m["credits_used"], {t["tool"]: t["count"] for t in m["tool_usage_breakdown"]})
        for m in stats["members"]
    }
    assert per_member == {
        "teamowner": (1, {"agent_message": 1}),
        "teamdev": (7, {"agent_message": 1, "create_ec2_instance": 1, "get_ec2_instances": 1}),
    }
    history = (await client.get(f"/api/orgs/{org['id']}/usage/history?limit=2")).json()
    assert history["total"] == 4
    assert [log["username"] for log in history["logs"]] == ["teamowner", "teamdev"]


async def test_every_org_route_checks_the_role(app: FastAPI, client: httpx.AsyncClient) -> None:
    owner = await pro(client)
    org = (await client.post("/api/orgs", json={"name": "Guarded"})).json()["organization"]
    oid = org["id"]
    async with make_client(app) as member_client, make_client(app) as stranger_client:
        member = await register(member_client)
        await register(stranger_client)
        await join(client, oid, member_client, member)
        pending = (await client.post(f"/api/orgs/{oid}/invitations", json={"email": "later@example.com"})).json()
        inv = pending["invitation"]["id"]
        routes: list[tuple[str, str, dict[str, Any] | None, int]] = [
            # method, path, body, what a plain member gets (a stranger always gets 404)
            ("GET", f"/api/orgs/{oid}", None, 200),
            ("GET", f"/api/orgs/{oid}/members", None, 200),
            ("GET", f"/api/orgs/{oid}/subscription", None, 200),
            ("GET", f"/api/orgs/{oid}/usage/stats", None, 200),
            ("GET", f"/api/orgs/{oid}/usage/history", None, 200),
            ("GET", f"/api/orgs/{oid}/invitations", None, 403),
            ("POST", f"/api/orgs/{oid}/invitations", {"email": "x@example.com"}, 403),
            ("DELETE", f"/api/orgs/{oid}/invitations/{inv}", None, 403),
            ("PUT", f"/api/orgs/{oid}/members/{member['id']}/cap", {"monthly_cap": 999}, 403),
            ("PUT", f"/api/orgs/{oid}/default-cap", {"monthly_cap": 999}, 403),
            ("PUT", f"/api/orgs/{oid}/members/{owner['id']}/role", {"role": "member"}, 403),
            ("DELETE", f"/api/orgs/{oid}/members/{owner['id']}", None, 409),
            ("POST", f"/api/orgs/{oid}/transfer", {"user_id": member["id"]}, 403),
            ("POST", f"/api/orgs/{oid}/subscription/upgrade", {"tier_id": 2}, 403),
            ("POST", f"/api/orgs/{oid}/subscription/cancel", None, 403),
            ("POST", f"/api/orgs/{oid}/credits/purchase", {"pack_size": 100}, 403),
            ("DELETE", f"/api/orgs/{oid}", None, 403),
        ]
        for method, path, body, member_status in routes:
            as_member = await member_client.request(method, path, json=body)
            assert as_member.status_code == member_status, (method, path, as_member.text)
            as_stranger = await stranger_client.request(method, path, json=body)
            assert as_stranger.status_code == 404, (method, path, as_stranger.text)
            assert as_stranger.json()["error"] == "organization_not_found"
        denied = await member_client.put(f"/api/orgs/{oid}/default-cap", json={"monthly_cap": 999})
        assert denied.json()["error"] == "forbidden"
    # Nothing changed for the refusals: still no default cap, the owner still owns.
    detail = (await client.get(f"/api/orgs/{oid}")).json()["organization"]
    assert (detail["default_member_cap"], detail["role"]) == (None, "owner")
    assert (await client.get("/api/orgs/99999")).status_code == 404


async def test_an_admin_never_acts_on_another_admin_or_the_owner(app: FastAPI, client: httpx.AsyncClient) -> None:
    owner = await pro(client)
    oid = (await client.post("/api/orgs", json={"name": "Peers"})).json()["organization"]["id"]
    async with make_client(app) as admin_client, make_client(app) as peer_client, make_client(app) as member_client:
        admin, peer, member = await register(admin_client), await register(peer_client), await register(member_client)
        for c, u in ((admin_client, admin), (peer_client, peer), (member_client, member)):
            await join(client, oid, c, u)
        for u in (admin, peer):
            promoted = await client.put(f"/api/orgs/{oid}/members/{u['id']}/role", json={"role": "admin"})
            assert promoted.status_code == 200, promoted.text

        refusals: list[tuple[str, str, dict[str, Any] | None]] = [
            ("PUT", f"/api/orgs/{oid}/members/{peer['id']}/role", {"role": "member"}),  # demote an admin
            ("DELETE", f"/api/orgs/{oid}/members/{peer['id']}", None),  # remove an admin
            ("PUT", f"/api/orgs/{oid}/members/{owner['id']}/cap", {"monthly_cap": 0}),  # cap the owner
            ("PUT", f"/api/orgs/{oid}/members/{peer['id']}/cap", {"monthly_cap": 0}),  # cap an admin
            ("PUT", f"/api/orgs/{oid}/members/{admin['id']}/cap", {"monthly_cap": None}),  # lift their own cap
            ("PUT", f"/api/orgs/{oid}/default-cap", {"monthly_cap": 0}),  # the default caps the owner too
        ]
        for method, path, body in refusals:
            refused = await admin_client.request(method, path, json=body)
            assert (refused.status_code, refused.json()["error"]) == (403, "forbidden"), (method, path, refused.text)

        members = {m["username"]: m for m in (await client.get(f"/api/orgs/{oid}/members")).json()["members"]}
        assert members[peer["username"]]["role"] == "admin"
        assert all(m["effective_cap"] is None for m in members.values())
        assert (await client.get(f"/api/orgs/{oid}")).json()["organization"]["default_member_cap"] is None

        # What an admin may do: cap and remove members, step down themself.
        capped = await admin_client.put(f"/api/orgs/{oid}/members/{member['id']}/cap", json={"monthly_cap": 5})
        assert capped.status_code == 200, capped.text
        assert (await admin_client.delete(f"/api/orgs/{oid}/members/{member['id']}")).status_code == 204
        down = await peer_client.put(f"/api/orgs/{oid}/members/{peer['id']}/role", json={"role": "member"})
        assert down.status_code == 200, down.text
        # The owner demotes, caps and removes admins, and sets the default.
        admin_capped = await client.put(f"/api/orgs/{oid}/members/{admin['id']}/cap", json={"monthly_cap": 3})
        assert admin_capped.status_code == 200, admin_capped.text
        demoted = await client.put(f"/api/orgs/{oid}/members/{admin['id']}/role", json={"role": "member"})
        assert demoted.status_code == 200, demoted.text
        assert (await client.put(f"/api/orgs/{oid}/default-cap", json={"monthly_cap": 10})).status_code == 200
        await client.put(f"/api/orgs/{oid}/members/{peer['id']}/role", json={"role": "admin"})
        assert (await client.delete(f"/api/orgs/{oid}/members/{peer['id']}")).status_code == 204


async def test_invitations_expire_work_once_and_only_for_their_address(app: FastAPI, client: httpx.AsyncClient) -> None:
    await pro(client)
    org = (await client.post("/api/orgs", json={"name": "Invites"})).json()["organization"]
    async with make_client(app) as guest_client, make_client(app) as other_client:
        guest = await register(guest_client)
        await register(other_client)
        token = (await client.post(f"/api/orgs/{org['id']}/invitations", json={"email": guest["email"]})).json()[
            "token"
        ]

        wrong = await other_client.post("/api/orgs/invitations/accept", json={"token": token})
        assert (wrong.status_code, wrong.json()["error"]) == (403, "invitation_wrong_user")
        unknown = await guest_client.post("/api/orgs/invitations/accept", json={"token": "nope"})
        assert (unknown.status_code, unknown.json()["error"]) == (404, "invitation_not_found")

        app.state.clock.advance(days=8)
        expired = await guest_client.post("/api/orgs/invitations/accept", json={"token": token})
        assert (expired.status_code, expired.json()["error"]) == (410, "invitation_expired")

        fresh = (await client.post(f"/api/orgs/{org['id']}/invitations", json={"email": guest["email"]})).json()
        assert (await client.get(f"/api/orgs/{org['id']}/invitations")).json()["invitations"][0]["status"] == "pending"
        assert (
            await guest_client.post("/api/orgs/invitations/accept", json={"token": fresh["token"]})
        ).status_code == 200
        reused = await guest_client.post("/api/orgs/invitations/accept", json={"token": fresh["token"]})
        assert (reused.status_code, reused.json()["error"]) == (409, "invitation_used")

        revoked = (await client.post(f"/api/orgs/{org['id']}/invitations", json={"email": "z@example.com"})).json()
        gone = await client.delete(f"/api/orgs/{org['id']}/invitations/{revoked['invitation']['id']}")
        assert gone.status_code == 204
        assert (await client.get(f"/api/orgs/{org['id']}/invitations")).json()["invitations"] == []


async def test_a_free_user_cannot_create_an_organization(client: httpx.AsyncClient) -> None:
    await register(client)
    refused = await client.post("/api/orgs", json={"name": "Nope"})
    assert (refused.status_code, refused.json()["error"]) == (403, "feature_not_in_plan")
    assert (await client.get("/api/orgs")).json() == {"organizations": []}


async def test_administrators_see_every_organization(app: FastAPI, client: httpx.AsyncClient) -> None:
    owner = await pro(client, "orgowner")
    await client.post("/api/orgs", json={"name": "Seen by admins"})
    assert (await client.get("/api/admin/organizations")).status_code == 403
    async with make_client(app) as admin_client:
        admin = await register(admin_client)
        async with app.state.db.transaction() as s:
            await s.execute(update(User).where(User.id == admin["id"]).values(is_admin=True))
        listed = (await admin_client.get("/api/admin/organizations")).json()
    assert listed["total"] == 1
    org = listed["organizations"][0]
    assert (org["name"], org["owner_id"], org["member_count"], org["tier"], org["credits_remaining"]) == (
        "Seen by admins",
        owner["id"],
        1,
        "Free",
        20,
    )


async def test_chat_in_a_team_workspace_charges_the_pool_and_holds_the_cap(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await pro(client)
    org = (await client.post("/api/orgs", json={"name": "Chatty"})).json()["organization"]
    async with make_client(app) as dev_client, make_client(app) as stranger_client:
        dev = await register(dev_client)
        await register(stranger_client)
        await join(client, org["id"], dev_client, dev)
        await client.put(f"/api/orgs/{org['id']}/members/{dev['id']}/cap", json={"monthly_cap": 3})

        reply = await dev_client.post("/api/chat", json={"message": "list my EC2 instances", "org_id": org["id"]})
        assert reply.status_code == 200, reply.text
        assert (reply.json()["credits_used"], reply.json()["credits_remaining"]) == (2, 18)  # the pool's balance
        mine = (await dev_client.get("/api/subscription")).json()["subscription"]
        assert mine["credits_remaining"] == 20  # the personal account paid nothing

        again = await dev_client.post("/api/chat", json={"message": "help", "org_id": org["id"]})
        assert again.status_code == 200, again.text
        capped = await dev_client.post("/api/chat", json={"message": "help", "org_id": org["id"]})
        assert capped.status_code == 402, capped.text
        assert (capped.json()["error"], capped.json()["cap"], capped.json()["used"]) == ("member_cap_reached", 3, 3)
        assert capped.json()["message"]

        outsider = await stranger_client.post("/api/chat", json={"message": "help", "org_id": org["id"]})
        assert (outsider.status_code, outsider.json()["error"]) == (404, "organization_not_found")

    stats = (await client.get(f"/api/orgs/{org['id']}/usage/stats")).json()
    assert stats["credits_remaining"] == 17
    assert {m["username"]: m["credits_used"] for m in stats["members"]}[dev["username"]] == 3
