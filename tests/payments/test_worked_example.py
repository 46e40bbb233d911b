"""Worked examples, end to end through the HTTP API, Stripe's SDK, localstripe and signed webhooks.

1. A pack: Checkout -> the customer pays -> ``checkout.session.completed`` -> credits;
   then a refund in Stripe -> ``charge.refunded`` -> the credits go back out.
2. A plan: Checkout -> subscription -> ``invoice.paid`` starts the Starter period;
   a renewal starts the next one; a failed renewal makes it ``past_due``; the paid
   retry brings it back; an upgrade changes the Stripe price with proration, a
   cancellation is made at period end on the subscription.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import select

from devops_agent import billing
from devops_agent.billing.catalog import load_catalog
from devops_agent.billing.models import CreditLedger, CreditPurchase, LedgerKind, SubscriptionTier
from devops_agent.db import Database
from devops_agent.payments.stripe_client import make_client
from devops_agent.payments.sync import sync_prices
from tests.factories import T0
from tests.payments.conftest import deliver, make_event
from tests.payments.edge import Edge, pay_checkout, sdk
from tests.web.conftest import register


async def subscription_of(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/api/subscription")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()["subscription"]
    return body


async def test_pack_bought_through_checkout_then_refunded(
    db: Database, stripe_client: httpx.AsyncClient, edge: Edge
) -> None:
    user = await register(stripe_client)

    response = await stripe_client.post("/api/credits/purchase", json={"pack_size": 250})
    assert response.status_code == 200, response.text
    session_id = response.json()["checkout_url"].rsplit("/", 1)[1]
    sent = edge.sessions[session_id]
    assert (sent["mode"], sent["client_reference_id"]) == ("payment", str(user["id"]))
    assert sent["metadata"]["kind"] == "pack"
    assert edge.posted("/v1/checkout/sessions")[-1].idempotency_key == (
        f"devops-agent:checkout:purchase:{sent['metadata']['purchase_id']}"
    )
    # Coming back from Stripe's page proves nothing: no credits before the webhook.
    assert (await subscription_of(stripe_client))["purchased_credits_remaining"] == 0

    paid = await asyncio.to_thread(pay_checkout, edge, session_id)
    assert (await deliver(stripe_client, make_event("checkout.session.completed", paid))).status_code == 200
    account = await subscription_of(stripe_client)
    assert (account["purchased_credits_remaining"], account["credits_remaining"]) == (250, 270)

    stripe_sdk = sdk(edge.url)
    refund = await asyncio.to_thread(stripe_sdk.v1.refunds.create, params={"payment_intent": paid["payment_intent"]})
    charge = await asyncio.to_thread(stripe_sdk.v1.charges.retrieve, str(refund.charge))
    assert charge["refunded"] is True
    response = await deliver(stripe_client, make_event("charge.refunded", charge.to_dict()))
    assert "clawed back" in response.json()["outcome"]

    account = await subscription_of(stripe_client)
    assert (account["purchased_credits_remaining"], account["credits_remaining"]) == (0, 20)
    async with db.transaction() as session:
        purchase = (
            await session.execute(select(CreditPurchase).where(CreditPurchase.user_id == user["id"]))
        ).scalar_one()
        clawback = (
            await session.execute(select(CreditLedger).where(CreditLedger.kind == LedgerKind.CLAWBACK.value))
        ).scalar_one()
    assert (purchase.payment_status, purchase.stripe_payment_intent_id) == ("refunded", paid["payment_intent"])
    assert (clawback.purchase_id, clawback.purchased_delta) == (purchase.id, -250)
    assert "charge.refunded" in (clawback.reason or "")


def invoice_for(template: dict[str, Any], start: int, end: int) -> dict[str, Any]:
    """The invoice of a later period of the same subscription (localstripe cannot move its clock)."""
    invoice = dict(template)
    invoice["id"] = f"{template['id']}_{start}"
    lines = [dict(line, period={"start": start, "end": end}) for line in template["lines"]["data"]]
    invoice["lines"] = dict(template["lines"], data=lines)
    return invoice


async def test_plan_checkout_renewal_failed_payment_recovery(
    db: Database, stripe_app: FastAPI, stripe_client: httpx.AsyncClient, edge: Edge
) -> None:
    settings = stripe_app.state.settings
    await sync_prices(db, make_client(settings), load_catalog(), now=T0)
    async with db.transaction() as session:
        tiers = {t.name: t.id for t in (await session.execute(select(SubscriptionTier))).scalars()}
    user = await register(stripe_client)

    response = await stripe_client.post("/api/subscription/upgrade", json={"tier_id": tiers["starter"]})
    assert response.status_code == 200, response.text
    session_id = response.json()["checkout_url"].rsplit("/", 1)[1]
    assert edge.sessions[session_id]["mode"] == "subscription"
    assert (await subscription_of(stripe_client))["tier"]["name"] == "free"

    paid = await asyncio.to_thread(pay_checkout, edge, session_id)
    stripe_sdk = sdk(edge.url)
    subscription = await asyncio.to_thread(stripe_sdk.v1.subscriptions.retrieve, paid["subscription"])
    first = (await asyncio.to_thread(stripe_sdk.v1.invoices.retrieve, str(subscription.latest_invoice))).to_dict()
    await deliver(stripe_client, make_event("checkout.session.completed", paid))
    await deliver(stripe_client, make_event("invoice.paid", first))
    account = await subscription_of(stripe_client)
    assert (account["tier"]["name"], account["credits_remaining"], account["payment_status"]) == (
        "starter",
        200,
        "active",
    )

    # Spend some, then the renewal: a new period with a fresh 200 monthly credits.
    async with db.transaction() as session:
        await billing.adjust(session, user_id=user["id"], amount=-50, reason="spent", admin_id=None, now=T0)
    period = first["lines"]["data"][0]["period"]
    month = period["end"] - period["start"]
    second = invoice_for(first, period["end"], period["end"] + month)
    await deliver(stripe_client, make_event("invoice.paid", second))
    account = await subscription_of(stripe_client)
    assert account["credits_remaining"] == 200
    assert account["current_period_start"].startswith(str(datetime.fromtimestamp(period["end"], UTC).date()))

    # The next renewal fails: past_due, no new credits; Stripe's retry succeeds: active again.
    third = invoice_for(first, period["end"] + month, period["end"] + 2 * month)
    await deliver(stripe_client, make_event("invoice.payment_failed", third))
    account = await subscription_of(stripe_client)
    assert (account["payment_status"], account["credits_remaining"]) == ("past_due", 200)
    await deliver(stripe_client, make_event("invoice.paid", third))
    account = await subscription_of(stripe_client)
    assert account["payment_status"] == "active"

    # An upgrade changes the subscription's price with proration; a cancellation is at period end.
    response = await stripe_client.post("/api/subscription/upgrade", json={"tier_id": tiers["professional"]})
    assert response.status_code == 200, response.text
    change = [r for r in edge.requests if r.method == "POST" and r.path == f"/v1/subscriptions/{subscription.id}"]
    assert change[-1].params["proration_behavior"] == "always_invoice"
    assert change[-1].params["billing_cycle_anchor"] == "now"
    assert change[-1].idempotency_key is not None
    response = await stripe_client.post("/api/subscription/cancel")
    assert response.status_code == 200, response.text
    assert edge.requests[-1].params == {"cancel_at_period_end": "true"}
    assert (await subscription_of(stripe_client))["cancel_at_period_end"] is True
