"""``POST /api/subscription/preview``: what a plan change costs and does, before it is made.

Demo mode answers from the change's own rules (both databases); Stripe mode asks
Stripe's upcoming-invoice preview for an upgrade of a running subscription (the edge
server answers it, as localstripe lacks it).
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from devops_agent.billing.catalog import load_catalog
from devops_agent.billing.models import CreditLedger, SubscriptionTier
from devops_agent.db import Database
from devops_agent.payments.stripe_client import make_client
from devops_agent.payments.sync import sync_prices
from tests.factories import T0
from tests.payments.conftest import deliver, make_event
from tests.payments.edge import Edge, pay_checkout, sdk
from tests.web.conftest import build_app, register
from tests.web.conftest import make_client as http_client

PREVIEW_KEYS = {"amount_due_now", "currency", "credits_after", "monthly_credits_lost", "effective_at", "next_renewal"}


@pytest.fixture
def app(db: Database, tmp_path: Path) -> FastAPI:
    return build_app(db, tmp_path)


@pytest.fixture
async def client(app: FastAPI) -> Any:
    async with http_client(app) as c:
        yield c


async def _tiers(client: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in (await client.get("/api/subscription/tiers")).json()["tiers"]}


async def _preview(client: httpx.AsyncClient, tier_id: int) -> httpx.Response:
    return await client.post("/api/subscription/preview", json={"tier_id": tier_id})


async def _ledger_rows(db: Database) -> int:
    async with db.transaction() as session:
        return int(await session.scalar(select(func.count()).select_from(CreditLedger)) or 0)


async def test_demo_previews_follow_the_change_rules(client: httpx.AsyncClient, app: FastAPI, db: Database) -> None:
    await register(client)
    tiers = await _tiers(client)
    assert (await client.post("/api/credits/purchase", json={"pack_size": 100})).status_code == 200
    await client.post("/api/chat", json={"message": "hello"})  # no agent runtime needed: 1 credit or a 502 refund
    before = (await client.get("/api/subscription")).json()["subscription"]
    rows = await _ledger_rows(db)

    upgrade = await _preview(client, tiers["starter"]["id"])
    assert upgrade.status_code == 200, upgrade.text
    body = upgrade.json()
    assert set(body) == PREVIEW_KEYS
    assert (body["amount_due_now"], body["currency"]) == (19.0, "usd")
    assert body["credits_after"] == 200 + before["purchased_credits_remaining"]
    assert body["monthly_credits_lost"] == before["monthly_credits_remaining"]
    now = app.state.clock()
    assert datetime.fromisoformat(body["effective_at"]) == now
    assert datetime.fromisoformat(body["next_renewal"]) == now.replace(month=now.month + 1)
    assert await _ledger_rows(db) == rows, "a preview changes nothing"

    changed = await client.post("/api/subscription/upgrade", json={"tier_id": tiers["starter"]["id"]})
    after = changed.json()["subscription"]
    assert after["credits_remaining"] == body["credits_after"]
    assert after["current_period_end"] == body["next_renewal"]

    # Starter to Professional replaces Starter's 200 credits: the preview says so first.
    professional = (await _preview(client, tiers["professional"]["id"])).json()
    assert (professional["amount_due_now"], professional["monthly_credits_lost"]) == (79.0, 200)
    assert professional["credits_after"] == 1000 + after["purchased_credits_remaining"]

    # A downgrade waits for the period's end: nothing due, nothing lost.
    down = (await _preview(client, tiers["free"]["id"])).json()
    assert (down["amount_due_now"], down["monthly_credits_lost"]) == (0.0, 0)
    assert down["effective_at"] == after["current_period_end"]
    assert down["credits_after"] == 20 + after["purchased_credits_remaining"]


async def test_preview_errors(client: httpx.AsyncClient) -> None:
    await register(client)
    tiers = await _tiers(client)
    same = await _preview(client, tiers["free"]["id"])
    assert (same.status_code, same.json()["error"]) == (400, "already_on_tier")
    missing = await _preview(client, 999_999)
    assert (missing.status_code, missing.json()["error"]) == (404, "tier_not_found")


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
async def test_stripe_preview_of_an_upgrade_is_stripes_prorated_invoice(
    db: Database, stripe_app: FastAPI, stripe_client: httpx.AsyncClient, edge: Edge
) -> None:
    await sync_prices(db, make_client(stripe_app.state.settings), load_catalog(), now=T0)
    async with db.transaction() as session:
        tiers = {t.name: t for t in (await session.execute(select(SubscriptionTier))).scalars()}
    await register(stripe_client)

    first = (await _preview(stripe_client, tiers["starter"].id)).json()
    assert first["amount_due_now"] == 19.0  # a first plan: Checkout at the full price
    assert not edge.posted("/v1/invoices/create_preview")

    response = await stripe_client.post("/api/subscription/upgrade", json={"tier_id": tiers["starter"].id})
    paid = await asyncio.to_thread(pay_checkout, edge, response.json()["checkout_url"].rsplit("/", 1)[1])
    stripe_sdk = sdk(edge.url)
    subscription: Any = await asyncio.to_thread(stripe_sdk.v1.subscriptions.retrieve, paid["subscription"])
    invoice = (await asyncio.to_thread(stripe_sdk.v1.invoices.retrieve, str(subscription.latest_invoice))).to_dict()
    await deliver(stripe_client, make_event("checkout.session.completed", paid))
    await deliver(stripe_client, make_event("invoice.paid", invoice))

    preview = await _preview(stripe_client, tiers["professional"].id)
    assert preview.status_code == 200, preview.text
    body = preview.json()
    # $79 for a new cycle less Starter's unused days (all but the few seconds since paying).
    assert 60.0 <= body["amount_due_now"] < 79.0
    assert (body["currency"], body["monthly_credits_lost"], body["credits_after"]) == ("usd", 200, 1000)
    [sent] = edge.posted("/v1/invoices/create_preview")
    details = sent.params["subscription_details"]
    assert sent.params["subscription"] == subscription.id
    assert details["items"][0]["price"] == tiers["professional"].stripe_price_id
    assert (details["proration_behavior"], details["billing_cycle_anchor"]) == ("always_invoice", "now")
    assert not edge.posted(f"/v1/subscriptions/{subscription.id}"), "a preview changes nothing at Stripe"
