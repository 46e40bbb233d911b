"""Plan changes on an existing Stripe subscription: a downgrade waits for the period end.

The downgrade changes the subscription's price without proration (Stripe bills the
cheaper price from the next invoice), is scheduled here at once, and the next paid
invoice starts the period on the cheaper tier. SQLite only: the webhook paths it
uses run on both databases in ``test_webhooks.py``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from devops_agent.billing.catalog import load_catalog
from devops_agent.billing.models import SubscriptionTier
from devops_agent.db import Database
from devops_agent.payments.stripe_client import make_client
from devops_agent.payments.sync import sync_prices
from tests.factories import T0
from tests.payments.conftest import deliver, make_event
from tests.payments.edge import Edge, pay_checkout, sdk
from tests.payments.test_worked_example import invoice_for, subscription_of
from tests.web.conftest import register


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
async def test_downgrade_is_scheduled_and_the_next_paid_invoice_applies_it(
    db: Database, stripe_app: FastAPI, stripe_client: httpx.AsyncClient, edge: Edge
) -> None:
    await sync_prices(db, make_client(stripe_app.state.settings), load_catalog(), now=T0)
    async with db.transaction() as session:
        tiers = {t.name: t for t in (await session.execute(select(SubscriptionTier))).scalars()}
    await register(stripe_client)
    response = await stripe_client.post("/api/subscription/upgrade", json={"tier_id": tiers["professional"].id})
    paid = await asyncio.to_thread(pay_checkout, edge, response.json()["checkout_url"].rsplit("/", 1)[1])
    stripe_sdk = sdk(edge.url)
    subscription: Any = await asyncio.to_thread(stripe_sdk.v1.subscriptions.retrieve, paid["subscription"])
    first = (await asyncio.to_thread(stripe_sdk.v1.invoices.retrieve, str(subscription.latest_invoice))).to_dict()
    await deliver(stripe_client, make_event("checkout.session.completed", paid))
    await deliver(stripe_client, make_event("invoice.paid", first))
    assert (await subscription_of(stripe_client))["tier"]["name"] == "professional"

    response = await stripe_client.post("/api/subscription/upgrade", json={"tier_id": tiers["starter"].id})

    assert response.status_code == 200, response.text
    update = edge.posted(f"/v1/subscriptions/{subscription.id}")[-1]
    assert update.params["proration_behavior"] == "none"
    assert update.params["items"][0]["price"] == tiers["starter"].stripe_price_id
    account = await subscription_of(stripe_client)
    assert (account["tier"]["name"], account["scheduled_tier"]["name"]) == ("professional", "starter")

    # Stripe confirms the price change; nothing moves until the period ends.
    changed: Any = await asyncio.to_thread(stripe_sdk.v1.subscriptions.retrieve, subscription.id)
    await deliver(stripe_client, make_event("customer.subscription.updated", changed.to_dict()))
    assert (await subscription_of(stripe_client))["tier"]["name"] == "professional"

    period = first["lines"]["data"][0]["period"]
    renewal = invoice_for(first, period["end"], 2 * period["end"] - period["start"])
    renewal["lines"]["data"][0]["plan"] = {"id": tiers["starter"].stripe_price_id}
    await deliver(stripe_client, make_event("invoice.paid", renewal))
    account = await subscription_of(stripe_client)
    assert (account["tier"]["name"], account["credits_remaining"], account["scheduled_tier"]) == ("starter", 200, None)
