"""Auto-recharge against localstripe: off-session PaymentIntents with test cards, one at a time.

The rule is set through the HTTP API (it needs a card saved with Stripe); the
recharge itself is ``auto_recharge.maybe_recharge``, what the app runs after a charge.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from devops_agent import billing
from devops_agent.billing.catalog import load_catalog
from devops_agent.billing.models import CreditPurchase, UserSubscription
from devops_agent.db import Database
from devops_agent.payments import auto_recharge
from devops_agent.payments.demo import DemoGateway
from devops_agent.payments.stripe_client import make_client
from tests.payments.edge import Edge, card, sdk
from tests.web.conftest import register

DECLINED_CARD = "4000000000000341"  # attaches, then every charge is declined (localstripe's test card)
RULE = {"enabled": True, "threshold": 50, "pack_size": 100, "monthly_cap": 2, "cooldown_minutes": 60}


async def user_with_card(client: httpx.AsyncClient, db: Database, edge: Edge, number: str) -> int:
    """Register, get a Stripe customer (the portal link makes one) and save a card for it."""
    user = await register(client)
    portal = await client.post("/api/stripe/portal")
    assert portal.status_code == 200, portal.text
    assert portal.json()["url"].startswith(f"{edge.url}/portal/")
    assert edge.posted("/v1/billing_portal/sessions")[-1].params["return_url"] == "http://testserver/billing"
    async with db.transaction() as session:
        customer = (
            await session.execute(
                select(UserSubscription.stripe_customer_id).where(UserSubscription.user_id == user["id"])
            )
        ).scalar_one()
    assert customer is not None
    await asyncio.to_thread(card, sdk(edge.url), customer, number)
    return int(user["id"])


async def recharge(app: FastAPI, db: Database, user_id: int) -> auto_recharge.RechargeOutcome:
    return await auto_recharge.maybe_recharge(
        db, make_client(app.state.settings), user_id=user_id, now=app.state.clock(), catalog=load_catalog()
    )


async def spend_to(db: Database, app: FastAPI, user_id: int, balance: int) -> None:
    async with db.transaction() as session:
        sub = await billing.get_account(session, user_id=user_id, now=app.state.clock())
        if sub.balance > balance:
            await billing.adjust(
                session,
                user_id=user_id,
                amount=balance - sub.balance,
                reason="spent",
                admin_id=None,
                now=app.state.clock(),
            )


async def purchases(db: Database, user_id: int) -> list[tuple[str, int, str | None]]:
    async with db.transaction() as session:
        rows = await session.execute(
            select(CreditPurchase).where(CreditPurchase.user_id == user_id).order_by(CreditPurchase.id)
        )
        return [(p.payment_status, p.credits_amount, p.stripe_payment_intent_id) for p in rows.scalars()]


async def test_enabling_needs_a_saved_card(stripe_client: httpx.AsyncClient) -> None:
    await register(stripe_client)

    response = await stripe_client.put("/api/stripe/auto-recharge", json=RULE)

    assert response.status_code == 400
    assert response.json()["error"] == "no_saved_card"
    assert (await stripe_client.get("/api/stripe/auto-recharge")).json()["enabled"] is False


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)  # rules over time; the race is tested below on both
async def test_recharge_charges_the_saved_card_with_cooldown_and_monthly_cap(
    db: Database, stripe_app: FastAPI, stripe_client: httpx.AsyncClient, edge: Edge
) -> None:
    user_id = await user_with_card(stripe_client, db, edge, "4242424242424242")
    response = await stripe_client.put("/api/stripe/auto-recharge", json=RULE)
    assert response.status_code == 200, response.text
    assert response.json()["has_saved_card"] is True

    first = await recharge(stripe_app, db, user_id)  # 20 free credits < 50
    assert first.status == "granted"
    intent: Any = await asyncio.to_thread(sdk(edge.url).v1.payment_intents.retrieve, str(first.payment_intent_id))
    assert (intent.status, intent.amount, intent.metadata["kind"]) == ("succeeded", 1000, "auto_recharge")
    assert edge.posted("/v1/payment_intents")[-1].params["off_session"] == "true"
    assert await purchases(db, user_id) == [("completed", 100, first.payment_intent_id)]

    assert (await recharge(stripe_app, db, user_id)).reason == "balance 120 is not below 50"
    await spend_to(db, stripe_app, user_id, 10)
    assert (await recharge(stripe_app, db, user_id)).reason == "cooling down after the last recharge"
    stripe_app.state.clock.advance(minutes=61)
    assert (await recharge(stripe_app, db, user_id)).status == "granted"
    await spend_to(db, stripe_app, user_id, 10)
    stripe_app.state.clock.advance(minutes=61)
    assert (await recharge(stripe_app, db, user_id)).reason == "monthly cap of 2 recharges reached"

    state = (await stripe_client.get("/api/stripe/auto-recharge")).json()
    assert (state["recharges_this_month"], state["in_flight"], state["last_error"]) == (2, False, None)


async def test_two_recharges_at_once_charge_once(
    db: Database, stripe_app: FastAPI, stripe_client: httpx.AsyncClient, edge: Edge
) -> None:
    user_id = await user_with_card(stripe_client, db, edge, "4242424242424242")
    assert (await stripe_client.put("/api/stripe/auto-recharge", json=RULE)).status_code == 200

    outcomes = await asyncio.gather(*(recharge(stripe_app, db, user_id) for _ in range(5)))

    assert sorted(o.status for o in outcomes) == ["granted"] + ["skipped"] * 4
    assert len(edge.posted("/v1/payment_intents")) == 1
    assert [p[:2] for p in await purchases(db, user_id)] == [("completed", 100)]


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
async def test_declined_card_fails_the_purchase_and_releases_the_guard(
    db: Database, stripe_app: FastAPI, stripe_client: httpx.AsyncClient, edge: Edge
) -> None:
    user_id = await user_with_card(stripe_client, db, edge, DECLINED_CARD)
    assert (await stripe_client.put("/api/stripe/auto-recharge", json=RULE)).status_code == 200

    outcome = await recharge(stripe_app, db, user_id)

    assert outcome.status == "declined"
    assert [p[:2] for p in await purchases(db, user_id)] == [("failed", 100)]
    state = (await stripe_client.get("/api/stripe/auto-recharge")).json()
    assert state["in_flight"] is False
    assert state["last_error"]
    async with db.transaction() as session:
        assert (await billing.get_account(session, user_id=user_id, now=stripe_app.state.clock())).balance == 20


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
async def test_recharge_after_a_charge_only_with_real_payments(
    db: Database, stripe_app: FastAPI, stripe_client: httpx.AsyncClient, edge: Edge
) -> None:
    user_id = await user_with_card(stripe_client, db, edge, "4242424242424242")
    assert (await stripe_client.put("/api/stripe/auto-recharge", json=RULE)).status_code == 200
    now, catalog = stripe_app.state.clock(), load_catalog()

    demo = await auto_recharge.recharge_if_due(db, DemoGateway(), user_id=user_id, now=now, catalog=catalog)
    real = await auto_recharge.recharge_if_due(db, stripe_app.state.gateway, user_id=user_id, now=now, catalog=catalog)

    assert demo is None
    assert real is not None
    assert real.status == "granted"


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)  # the recharge's races are tested above on both
async def test_a_chat_that_lowers_the_balance_triggers_the_recharge(
    db: Database, stripe_client: httpx.AsyncClient, edge: Edge
) -> None:
    """The chat endpoint runs the user's rule after its response, with the charge committed."""
    user_id = await user_with_card(stripe_client, db, edge, "4242424242424242")
    assert (await stripe_client.put("/api/stripe/auto-recharge", json=RULE)).status_code == 200

    reply = await stripe_client.post("/api/chat", json={"message": "hello"})

    assert reply.status_code == 200, reply.text
    assert reply.json()["credits_remaining"] == 19  # the reply's balance, before the recharge
    assert [(status, amount) for status, amount, _ in await purchases(db, user_id)] == [("completed", 100)]
    subscription = (await stripe_client.get("/api/subscription")).json()["subscription"]
    assert subscription["credits_remaining"] == 119
