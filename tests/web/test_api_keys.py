"""API keys: the ``api_access`` plan feature gates them; Bearer authenticates every endpoint."""

from __future__ import annotations

import hashlib

from fastapi import FastAPI
from sqlalchemy import select

from devops_agent.web.models import ApiKey
from tests.web.conftest import make_client, register


async def upgrade_to(client, name: str) -> None:
    tiers = {t["name"]: t["id"] for t in (await client.get("/api/subscription/tiers")).json()["tiers"]}
    response = await client.post("/api/subscription/upgrade", json={"tier_id": tiers[name]})
    assert response.status_code == 200, response.text


async def test_free_plan_cannot_create_keys_and_is_told_which_tiers_can(client) -> None:
    await register(client)
    response = await client.post("/api/keys", json={"name": "ci"})
    assert response.status_code == 403
    body = response.json()
    assert body["error"] == "feature_not_in_plan"
    assert body["feature"] == "api_access"
    assert body["tiers"] == ["starter", "professional", "business"]
    assert (await client.get("/api/keys")).json() == {"keys": []}


async def test_starter_key_works_everywhere_without_csrf_and_is_stored_hashed(app: FastAPI, client) -> None:
    user = await register(client)
    await upgrade_to(client, "starter")
    created = await client.post("/api/keys", json={"name": "ci"})
    assert created.status_code == 201, created.text
    secret = created.json()["secret"]
    key = created.json()["key"]
    assert secret.startswith("da_live_")
    assert len(secret) > 40
    assert secret.startswith(key["prefix"])
    assert key["name"] == "ci"
    assert key["revoked_at"] is None

    async with make_client(app, headers={"Authorization": f"Bearer {secret}"}) as script:
        assert (await script.get("/api/auth/me")).json()["user"]["id"] == user["id"]
        assert (await script.get("/api/subscription")).json()["subscription"]["tier"]["name"] == "starter"
        bought = await script.post("/api/credits/purchase", json={"pack_size": 100})  # no CSRF token needed
        assert bought.status_code == 200, bought.text
        assert bought.json()["credits_remaining"] == 300

    listed = (await client.get("/api/keys")).json()["keys"]
    assert [k["id"] for k in listed] == [key["id"]]
    assert "secret" not in listed[0]
    assert listed[0]["last_used_at"] is not None
    async with app.state.db.transaction() as session:
        stored = (await session.execute(select(ApiKey))).scalar_one()
    assert stored.key_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in (stored.prefix, stored.name)


async def test_revoked_wrong_and_malformed_keys_are_401(app: FastAPI, client) -> None:
    await register(client)
    await upgrade_to(client, "starter")
    created = (await client.post("/api/keys", json={})).json()
    secret = created["secret"]
    assert (await client.delete(f"/api/keys/{created['key']['id']}")).status_code == 204
    assert (await client.get("/api/keys")).json()["keys"][0]["revoked_at"] is not None
    for header in (f"Bearer {secret}", "Bearer da_live_not-a-key", "Basic dXNlcjpwYXNz", "Bearer "):
        async with make_client(app, headers={"Authorization": header}) as script:
            response = await script.get("/api/subscription")
        assert response.status_code == 401, header
        assert response.json()["error"] == "unauthenticated"


async def test_keys_stop_working_on_a_plan_without_api_access(app: FastAPI, client) -> None:
    await register(client)
    await upgrade_to(client, "starter")
    secret = (await client.post("/api/keys", json={"name": "x"})).json()["secret"]
    await client.post("/api/subscription/cancel")
    app.state.clock.advance(days=31)  # the plan ends: back to Free
    async with make_client(app, headers={"Authorization": f"Bearer {secret}"}) as script:
        response = await script.get("/api/subscription")
    assert response.status_code == 403
    assert response.json()["error"] == "feature_not_in_plan"


async def test_a_user_cannot_see_or_revoke_another_users_key(app: FastAPI) -> None:
    async with make_client(app) as alice, make_client(app) as mallory:
        await register(alice)
        await upgrade_to(alice, "starter")
        created = (await alice.post("/api/keys", json={"name": "mine"})).json()
        await register(mallory)
        assert (await mallory.get("/api/keys")).json() == {"keys": []}
        response = await mallory.delete(f"/api/keys/{created['key']['id']}")
        assert response.status_code == 404
        assert response.json()["error"] == "api_key_not_found"
        async with make_client(app, headers={"Authorization": f"Bearer {created['secret']}"}) as script:
            assert (await script.get("/api/auth/me")).status_code == 200
