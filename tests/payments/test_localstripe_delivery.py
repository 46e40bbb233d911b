"""Webhook delivery by Stripe itself (localstripe), over a real socket, with its own signature.

The app is served by uvicorn on a free loopback port inside the test's event loop;
localstripe is told (``/_config/webhooks``) to post events there signed with our
webhook secret. The story: an auto-recharge whose process stopped right after
Stripe took the payment (a pending purchase, a PaymentIntent made directly with the
SDK) is completed by the ``payment_intent.succeeded`` event alone.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from decimal import Decimal

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy import select

from devops_agent import billing
from devops_agent.billing.models import CreditPurchase
from devops_agent.db import Database
from devops_agent.payments.models import StripeEvent
from tests.factories import T0, account, make_user
from tests.payments.edge import WEBHOOK_SECRET, Edge, card, free_port, sdk


@pytest.fixture
async def served(stripe_app: FastAPI, edge: Edge) -> AsyncIterator[str]:
    """The app on a real port, registered as localstripe's webhook endpoint for this test."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(stripe_app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)  # wait for the server to bind; not a timing assumption
    url = f"http://127.0.0.1:{port}/api/stripe/webhook"
    config = f"{edge.upstream}/_config/webhooks/devops_agent"
    async with httpx.AsyncClient() as client:
        await client.post(config, data={"url": url, "secret": WEBHOOK_SECRET, "events[]": "payment_intent.succeeded"})
        yield url
        await client.post(config, data={"url": url, "secret": WEBHOOK_SECRET, "events[]": "none.disabled"})
    server.should_exit = True
    await task


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)  # the transport; the handler runs on both elsewhere
async def test_stripe_delivered_event_completes_a_pending_auto_recharge(db: Database, served: str, edge: Edge) -> None:
    async with db.transaction() as session:
        user = await make_user(session)
        purchase = await billing.create_purchase(
            session, user_id=user.id, credits_amount=100, price_paid=Decimal("10.00"), now=T0
        )
    stripe_sdk = sdk(edge.url)
    customer = await asyncio.to_thread(stripe_sdk.v1.customers.create, params={"email": user.email})
    pm = await asyncio.to_thread(card, stripe_sdk, customer.id)
    intent = await asyncio.to_thread(
        stripe_sdk.v1.payment_intents.create,
        params={
            "amount": 1000,
            "currency": "usd",
            "customer": customer.id,
            "payment_method": pm,
            "confirm": True,
            "off_session": True,
            "metadata": {"kind": "auto_recharge", "purchase_id": str(purchase.id), "user_id": str(user.id)},
        },
    )
    assert intent.status == "succeeded"

    deadline = time.monotonic() + 20  # localstripe posts about a second after the payment
    while True:
        async with db.transaction() as session:
            done = await session.get(CreditPurchase, purchase.id, populate_existing=True)
            assert done is not None
            if done.payment_status == "completed" or time.monotonic() > deadline:
                break
        await asyncio.sleep(0.05)

    assert (done.payment_status, done.stripe_payment_intent_id) == ("completed", intent.id)
    async with db.transaction() as session:
        assert (await account(session, user.id)).purchased_credits_remaining == 100
        types = (await session.execute(select(StripeEvent.type))).scalars().all()
    assert types == ["payment_intent.succeeded"]
