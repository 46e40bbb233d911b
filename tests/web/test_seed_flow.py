"""The manual test plan (below) over HTTP, end to end, and the tier moves of the contract.

1. create an account  2. it has 20 credits  3. actions spend them  4. buy a pack
5. upgrade to a paid tier  6. usage stats and history tell the story.
Agent actions are charged through the credits engine directly (the chat endpoint
has tests of its own).
"""

from __future__ import annotations

from datetime import datetime

from fastapi import FastAPI
from sqlalchemy import select, update

from devops_agent import billing
from devops_agent.billing.models import ActionType, CreditPurchase, SubscriptionTier, UserSubscription
from tests.web.conftest import make_client, register


async def spend(app: FastAPI, user_id: int, *, tool: str | None = None, amount: int = 1) -> None:
    """One agent action, charged as the chat endpoint would."""
    now: datetime = app.state.clock()
    async with app.state.db.transaction() as session:
        await billing.charge(
            session,
            user_id=user_id,
            amount=amount,
            action_type=ActionType.TOOL_USE if tool else ActionType.AGENT_MESSAGE,
            tool_name=tool,
            now=now,
        )


async def test_the_seed_manual_test_plan(app: FastAPI, client) -> None:
    user = await register(client, "seeduser")

    sub = (await client.get("/api/subscription")).json()["subscription"]
    assert (sub["credits_remaining"], sub["tier"]["name"], sub["credits_used_this_month"]) == (20, "free", 0)

    for _ in range(3):
        await spend(app, user["id"])
        app.state.clock.advance(seconds=1)
    await spend(app, user["id"], tool="get_ec2_instances")
    app.state.clock.advance(seconds=1)
    await spend(app, user["id"], tool="create_ec2_instance", amount=5)
    sub = (await client.get("/api/subscription")).json()["subscription"]
    assert (sub["credits_remaining"], sub["credits_used_this_month"], sub["total_credits_used"]) == (11, 9, 9)

    packs = (await client.get("/api/credits/packs")).json()
    assert packs["payments_mode"] == "demo"
    assert [(p["credits"], p["price"], p["popular"]) for p in packs["packs"]] == [
        (100, 10.0, False),
        (250, 20.0, True),
        (500, 35.0, False),
        (1000, 60.0, False),
    ]
    assert packs["packs"][1]["price_per_credit"] == 0.08

    bought = await client.post("/api/credits/purchase", json={"pack_size": 250})
    assert bought.status_code == 200, bought.text
    body = bought.json()
    assert body["credits_remaining"] == 261
    assert body["purchase"]["credits_amount"] == 250
    assert body["purchase"]["price_paid"] == 20.0
    assert body["purchase"]["payment_status"] == "completed"
    assert body["purchase"]["completed_at"].endswith("+00:00")

    tiers = (await client.get("/api/subscription/tiers")).json()["tiers"]
    assert [t["name"] for t in tiers] == ["free", "starter", "professional", "business"]
    starter = tiers[1]
    assert starter["monthly_price"] == 19.0
    upgraded = await client.post("/api/subscription/upgrade", json={"tier_id": starter["id"]})
    assert upgraded.status_code == 200, upgraded.text
    sub = upgraded.json()["subscription"]
    assert "Starter" in upgraded.json()["message"]
    assert sub["tier"]["name"] == "starter"
    # A new period with Starter's 200 monthly credits; the 250 purchased credits are kept.
    assert (sub["monthly_credits_remaining"], sub["purchased_credits_remaining"], sub["credits_remaining"]) == (
        200,
        250,
        450,
    )
    # A plan change is not a new month: the 9 credits used today stay counted.
    assert sub["credits_used_this_month"] == 9
    assert sub["total_credits_used"] == 9

    stats = (await client.get("/api/usage/stats")).json()
    assert stats["credits_remaining"] == 450
    assert stats["total_credits_used"] == 9
    assert stats["tier"]["name"] == "starter"
    assert stats["tool_usage_breakdown"] == [
        {"tool": "agent_message", "count": 3},
        {"tool": "create_ec2_instance", "count": 1},
        {"tool": "get_ec2_instances", "count": 1},
    ]

    history = (await client.get("/api/usage/history", params={"limit": 2})).json()
    assert (history["total"], history["limit"], history["offset"]) == (5, 2, 0)
    assert [log["tool_name"] for log in history["logs"]] == ["create_ec2_instance", "get_ec2_instances"]
    assert history["logs"][0]["credits_used"] == 5
    rest = (await client.get("/api/usage/history", params={"limit": 2, "offset": 2})).json()["logs"]
    assert [log["action_type"] for log in rest] == ["agent_message", "agent_message"]

    async with app.state.db.transaction() as session:
        account = (await session.execute(select(UserSubscription))).scalar_one()
        ledger = await billing.ledger_sums(session, subscription_id=account.id)
        purchase = (await session.execute(select(CreditPurchase))).scalar_one()
    assert (ledger.monthly, ledger.purchased) == (200, 250)
    assert str(purchase.price_paid) == "20.00"


async def test_reads_apply_the_monthly_reset_and_purchased_credits_survive(app: FastAPI, client) -> None:
    user = await register(client)
    await client.post("/api/credits/purchase", json={"pack_size": 100})
    await spend(app, user["id"], amount=15)
    app.state.clock.advance(days=32)
    sub = (await client.get("/api/subscription")).json()["subscription"]
    assert (sub["monthly_credits_remaining"], sub["purchased_credits_remaining"]) == (20, 100)
    assert sub["credits_used_this_month"] == 0
    assert sub["current_period_start"] == "2026-02-15T12:00:00+00:00"
    assert sub["current_period_end"] == "2026-03-15T12:00:00+00:00"
    app.state.clock.advance(days=31)
    assert (await client.get("/api/usage/stats")).json()["credits_used_this_month"] == 0


async def test_downgrade_is_scheduled_and_cancel_returns_to_free_at_period_end(app: FastAPI, client) -> None:
    await register(client)
    tiers = {t["name"]: t for t in (await client.get("/api/subscription/tiers")).json()["tiers"]}
    await client.post("/api/subscription/upgrade", json={"tier_id": tiers["professional"]["id"]})

    down = await client.post("/api/subscription/upgrade", json={"tier_id": tiers["starter"]["id"]})
    sub = down.json()["subscription"]
    assert sub["tier"]["name"] == "professional"
    assert sub["scheduled_tier"]["name"] == "starter"
    assert sub["monthly_credits_remaining"] == 1000

    cancelled = await client.post("/api/subscription/cancel")
    assert cancelled.status_code == 200
    sub = cancelled.json()["subscription"]
    assert sub["cancel_at_period_end"] is True
    assert sub["tier"]["name"] == "professional"

    app.state.clock.advance(days=31)
    sub = (await client.get("/api/subscription")).json()["subscription"]
    assert (sub["tier"]["name"], sub["credits_remaining"], sub["cancel_at_period_end"]) == ("free", 20, False)
    assert sub["scheduled_tier"] is None


async def test_one_user_never_sees_or_changes_another_users_data(app: FastAPI) -> None:
    async with make_client(app) as alice, make_client(app) as bob:
        a = await register(alice, "alice")
        b = await register(bob, "bob")
        await spend(app, a["id"], tool="list_s3_buckets")
        await alice.post("/api/credits/purchase", json={"pack_size": 500})

        # Bob's own views show none of Alice's activity.
        sub = (await bob.get("/api/subscription")).json()["subscription"]
        assert (sub["credits_remaining"], sub["total_credits_used"]) == (20, 0)
        assert (await bob.get("/api/usage/history")).json() == {"logs": [], "total": 0, "limit": 50, "offset": 0}
        assert (await bob.get("/api/usage/stats")).json()["tool_usage_breakdown"] == []
        assert (await bob.get("/api/auth/me")).json()["user"]["id"] == b["id"]

        # Bob's session cookie with Alice's CSRF token is refused, not applied to anyone.
        forged = await bob.post(
            "/api/credits/purchase", json={"pack_size": 100}, headers={"X-CSRF-Token": alice.cookies["csrf_token"]}
        )
        assert forged.status_code == 403
        # Changes Bob makes land on Bob only.
        await bob.post("/api/credits/purchase", json={"pack_size": 100})
        assert (await alice.get("/api/subscription")).json()["subscription"]["credits_remaining"] == 519
        assert (await bob.get("/api/subscription")).json()["subscription"]["credits_remaining"] == 120


async def test_tiers_and_packs_are_public_and_tiers_are_served_from_memory(app: FastAPI, client) -> None:
    tiers = await client.get("/api/subscription/tiers")
    assert tiers.status_code == 200
    assert tiers.json()["payments_mode"] == "demo"
    prices = [t["monthly_price"] for t in tiers.json()["tiers"]]
    assert prices == sorted(prices)
    assert (await client.get("/api/credits/packs")).status_code == 200

    async with app.state.db.transaction() as session:
        await session.execute(
            update(SubscriptionTier).where(SubscriptionTier.name == "business").values(is_active=False)
        )
    cached = (await client.get("/api/subscription/tiers")).json()["tiers"]
    assert "business" in [t["name"] for t in cached]  # no query: the list is cached for a few seconds
    app.state.tier_cache.clear()
    fresh = (await client.get("/api/subscription/tiers")).json()["tiers"]
    assert [t["name"] for t in fresh] == ["free", "starter", "professional"]
