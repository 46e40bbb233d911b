"""``Idempotency-Key``: a retried purchase or upgrade replays the first answer and charges once."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI
from sqlalchemy import func, select

from devops_agent.billing.models import CreditLedger, CreditPurchase
from tests.web.conftest import make_client, register


async def count(app: FastAPI, model) -> int:
    async with app.state.db.transaction() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_a_retried_purchase_is_charged_once_and_replays_the_first_answer(app: FastAPI, client) -> None:
    await register(client)
    headers = {"Idempotency-Key": "buy-250-once"}
    first = await client.post("/api/credits/purchase", json={"pack_size": 250}, headers=headers)
    again = await client.post("/api/credits/purchase", json={"pack_size": 250}, headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert await count(app, CreditPurchase) == 1
    assert (await client.get("/api/subscription")).json()["subscription"]["credits_remaining"] == 270

    # The same key for a different request is a conflict, not a silent replay.
    other = await client.post("/api/credits/purchase", json={"pack_size": 500}, headers=headers)
    assert other.status_code == 409
    assert other.json()["error"] == "conflict"
    # Without a key, or with a new one, a second purchase is a second purchase.
    await client.post("/api/credits/purchase", json={"pack_size": 250}, headers={"Idempotency-Key": "another"})
    assert await count(app, CreditPurchase) == 2


async def test_concurrent_retries_buy_once(app: FastAPI, client) -> None:
    await register(client)
    headers = {"Idempotency-Key": "double-click"}
    responses = await asyncio.gather(
        *[client.post("/api/credits/purchase", json={"pack_size": 100}, headers=headers) for _ in range(4)]
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) >= 1
    assert set(statuses) <= {200, 409}  # 409: "still being processed" for a retry that overlaps the first
    assert await count(app, CreditPurchase) == 1
    assert (await client.get("/api/subscription")).json()["subscription"]["credits_remaining"] == 120


async def test_keys_belong_to_their_user_and_failed_requests_release_the_key(app: FastAPI) -> None:
    async with make_client(app) as alice, make_client(app) as bob:
        await register(alice)
        await register(bob)
        headers = {"Idempotency-Key": "same-key"}
        a = await alice.post("/api/credits/purchase", json={"pack_size": 100}, headers=headers)
        b = await bob.post("/api/credits/purchase", json={"pack_size": 100}, headers=headers)
        assert a.status_code == b.status_code == 200
        assert a.json()["purchase"]["id"] != b.json()["purchase"]["id"]

        upgrade_key = {"Idempotency-Key": "upgrade-1"}
        missing = await alice.post("/api/subscription/upgrade", json={"tier_id": 999}, headers=upgrade_key)
        assert missing.status_code == 404
        ledger_rows = await count(app, CreditLedger)
        first = await alice.post("/api/subscription/upgrade", json={"tier_id": 999}, headers=upgrade_key)
        assert first.status_code == 404  # not replayed as success, not stuck as "in progress"
        assert await count(app, CreditLedger) == ledger_rows

        tiers = {t["name"]: t["id"] for t in (await alice.get("/api/subscription/tiers")).json()["tiers"]}
        body = {"tier_id": tiers["business"]}
        up = await alice.post("/api/subscription/upgrade", json=body, headers={"Idempotency-Key": "upgrade-2"})
        ledger_rows = await count(app, CreditLedger)
        again = await alice.post("/api/subscription/upgrade", json=body, headers={"Idempotency-Key": "upgrade-2"})
        assert again.json() == up.json()
        assert again.json()["subscription"]["tier"]["name"] == "business"
        assert await count(app, CreditLedger) == ledger_rows
