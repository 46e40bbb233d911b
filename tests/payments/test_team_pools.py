"""A team's pool paid through Stripe: the organization is a customer of its own, the owner pays.

End to end through the HTTP API, Stripe's SDK, localstripe, the edge server and signed
webhooks (redelivered, concurrent, out of order), on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import func, select

from devops_agent import billing
from devops_agent.billing.catalog import load_catalog
from devops_agent.billing.models import CreditLedger, CreditPurchase, LedgerKind, SubscriptionTier, UserSubscription
from devops_agent.db import Database
from devops_agent.payments import auto_recharge
from devops_agent.payments.stripe_client import make_client
from devops_agent.payments.sync import sync_prices
from tests.factories import T0
from tests.payments.conftest import deliver, make_event
from tests.payments.edge import Edge, card, pay_checkout, sdk
from tests.payments.test_worked_example import invoice_for
from tests.web.conftest import make_client as http_client
from tests.web.conftest import register


async def team_owner(app: FastAPI, client: httpx.AsyncClient, name: str = "Night Shift") -> tuple[dict[str, Any], int]:
    """A user on Professional (teams; moved in the engine, no Stripe needed) who creates an organization."""
    user = await register(client)
    async with app.state.db.transaction() as session:
        pro = await billing.tier_by_name(session, "professional")
        await billing.change_tier(session, user_id=user["id"], tier_id=pro.id, now=app.state.clock())
    created = await client.post("/api/orgs", json={"name": name})
    assert created.status_code == 201, created.text
    return user, int(created.json()["organization"]["id"])


async def pool(client: httpx.AsyncClient, org_id: int) -> dict[str, Any]:
    response = await client.get(f"/api/orgs/{org_id}/subscription")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()["subscription"]
    return body


async def org_customer(db: Database, org_id: int) -> str:
    async with db.transaction() as session:
        customer = await session.scalar(
            select(UserSubscription.stripe_customer_id).where(UserSubscription.organization_id == org_id)
        )
    assert customer is not None
    return str(customer)


async def test_the_owner_buys_a_pack_for_the_pool_credited_once_then_refunded(
    db: Database, stripe_app: FastAPI, stripe_client: httpx.AsyncClient, edge: Edge
) -> None:
    owner, org_id = await team_owner(stripe_app, stripe_client)

    response = await stripe_client.post(f"/api/orgs/{org_id}/credits/purchase", json={"pack_size": 250})
    assert response.status_code == 200, response.text
    session_id = response.json()["checkout_url"].rsplit("/", 1)[1]
    sent = edge.sessions[session_id]
    assert sent["metadata"]["org_id"] == str(org_id)
    assert sent["success_url"].startswith(f"http://testserver/orgs/{org_id}?checkout=success")
    # The organization is its own customer: its name, the owner's email, its id in the metadata.
    customer = await asyncio.to_thread(sdk(edge.url).v1.customers.retrieve, sent["customer"])
    assert (customer.name, customer.email, customer.metadata["org_id"]) == ("Night Shift", owner["email"], str(org_id))
    assert sent["customer"] == await org_customer(db, org_id)
    assert (await pool(stripe_client, org_id))["purchased_credits_remaining"] == 0  # nothing before the webhook

    paid = await asyncio.to_thread(pay_checkout, edge, session_id)
    event = make_event("checkout.session.completed", paid)
    responses = await asyncio.gather(*(deliver(stripe_client, event) for _ in range(8)))
    assert [r.status_code for r in responses] == [200] * 8
    assert sum(not r.json()["duplicate"] for r in responses) == 1
    assert (await deliver(stripe_client, event)).json()["duplicate"] is True  # redelivered later
    assert (await pool(stripe_client, org_id))["purchased_credits_remaining"] == 250
    mine = (await stripe_client.get("/api/subscription")).json()["subscription"]
    assert mine["purchased_credits_remaining"] == 0  # the owner's own account is not the pool

    stripe_sdk = sdk(edge.url)
    refund = await asyncio.to_thread(stripe_sdk.v1.refunds.create, params={"payment_intent": paid["payment_intent"]})
    charge = (await asyncio.to_thread(stripe_sdk.v1.charges.retrieve, str(refund.charge))).to_dict()
    refunded = make_event("charge.refunded", charge)
    outcomes = await asyncio.gather(deliver(stripe_client, refunded), deliver(stripe_client, refunded))
    assert sorted(r.json()["duplicate"] for r in outcomes) == [False, True]
    assert (await pool(stripe_client, org_id))["purchased_credits_remaining"] == 0
    async with db.transaction() as session:
        purchase = (await session.execute(select(CreditPurchase))).scalar_one()
        clawbacks = await session.scalar(
            select(func.count()).select_from(CreditLedger).where(CreditLedger.kind == LedgerKind.CLAWBACK.value)
        )
        account = await billing.get_account(session, user_id=None, org_id=org_id, now=T0)
        sums = await billing.ledger_sums(session, subscription_id=account.id)
    assert (purchase.organization_id, purchase.user_id, purchase.payment_status) == (org_id, owner["id"], "refunded")
    assert clawbacks == 1
    assert sums == billing.Balance(account.credits_remaining, account.purchased_credits_remaining)


async def test_the_pool_subscribes_through_checkout_and_its_periods_follow_paid_invoices(
    db: Database, stripe_app: FastAPI, stripe_client: httpx.AsyncClient, edge: Edge
) -> None:
    await sync_prices(db, make_client(stripe_app.state.settings), load_catalog(), now=T0)
    async with db.transaction() as session:
        tiers = {t.name: t.id for t in (await session.execute(select(SubscriptionTier))).scalars()}
    _, org_id = await team_owner(stripe_app, stripe_client)

    response = await stripe_client.post(f"/api/orgs/{org_id}/subscription/upgrade", json={"tier_id": tiers["business"]})
    assert response.status_code == 200, response.text
    session_id = response.json()["checkout_url"].rsplit("/", 1)[1]
    assert edge.sessions[session_id]["mode"] == "subscription"
    assert edge.sessions[session_id]["subscription_data"]["metadata"]["org_id"] == str(org_id)

    paid = await asyncio.to_thread(pay_checkout, edge, session_id)
    stripe_sdk = sdk(edge.url)
    subscription = await asyncio.to_thread(stripe_sdk.v1.subscriptions.retrieve, paid["subscription"])
    first = (await asyncio.to_thread(stripe_sdk.v1.invoices.retrieve, str(subscription.latest_invoice))).to_dict()
    # Out of order: the paid invoice arrives before the checkout; both twice.
    for event in (make_event("invoice.paid", first), make_event("checkout.session.completed", paid)):
        assert (await deliver(stripe_client, event)).status_code == 200
        assert (await deliver(stripe_client, event)).json()["duplicate"] is True
    account = await pool(stripe_client, org_id)
    assert (account["tier"]["name"], account["credits_remaining"], account["payment_status"]) == (
        "business",
        3000,
        "active",
    )
    assert (await stripe_client.get("/api/subscription")).json()["subscription"]["tier"]["name"] == "professional"

    # The renewal's paid invoice starts the next period; the renewal after it fails, then the subscription ends.
    period = first["lines"]["data"][0]["period"]
    month = period["end"] - period["start"]
    second = invoice_for(first, period["end"], period["end"] + month)
    renewals = await asyncio.gather(*(deliver(stripe_client, make_event("invoice.paid", second)) for _ in range(3)))
    assert all(r.status_code == 200 for r in renewals)
    async with db.transaction() as session:
        account_row = await billing.get_account(session, user_id=None, org_id=org_id, now=T0)
        grants = await session.scalar(
            select(func.count())
            .select_from(CreditLedger)
            .where(CreditLedger.subscription_id == account_row.id, CreditLedger.kind == LedgerKind.MONTHLY_GRANT.value)
        )
    assert int(account_row.current_period_start.timestamp()) == period["end"]
    assert grants == 3  # Free at creation, the first paid period, the renewal (once, whatever the deliveries)
    third = invoice_for(first, period["end"] + month, period["end"] + 2 * month)
    await deliver(stripe_client, make_event("invoice.payment_failed", third))
    assert (await pool(stripe_client, org_id))["payment_status"] == "past_due"
    ended = subscription.to_dict() | {"status": "canceled"}
    await deliver(stripe_client, make_event("customer.subscription.deleted", ended))
    assert (await pool(stripe_client, org_id))["tier"]["name"] == "free"

    portal = await stripe_client.post(f"/api/orgs/{org_id}/billing/portal")
    assert portal.status_code == 200, portal.text
    opened = edge.posted("/v1/billing_portal/sessions")[-1].params
    assert opened == {"customer": await org_customer(db, org_id), "return_url": f"http://testserver/orgs/{org_id}"}


async def test_only_the_owner_pays_for_the_pool(
    db: Database, stripe_app: FastAPI, stripe_client: httpx.AsyncClient, edge: Edge
) -> None:
    _, org_id = await team_owner(stripe_app, stripe_client)
    calls = [
        ("post", f"/api/orgs/{org_id}/credits/purchase", {"pack_size": 100}),
        ("post", f"/api/orgs/{org_id}/subscription/upgrade", {"tier_id": 3}),
        ("post", f"/api/orgs/{org_id}/subscription/cancel", None),
        ("post", f"/api/orgs/{org_id}/billing/portal", None),
        ("get", f"/api/orgs/{org_id}/auto-recharge", None),
        ("put", f"/api/orgs/{org_id}/auto-recharge", {"enabled": False, "threshold": 10, "pack_size": 100}),
    ]
    async with http_client(stripe_app) as admin, http_client(stripe_app) as member, http_client(stripe_app) as outsider:
        for client, role in ((admin, "admin"), (member, "member")):
            user = await register(client)
            made = await stripe_client.post(
                f"/api/orgs/{org_id}/invitations", json={"email": user["email"], "role": role}
            )
            accepted = await client.post("/api/orgs/invitations/accept", json={"token": made.json()["token"]})
            assert accepted.status_code == 200, accepted.text
        await register(outsider)
        requests_before = len(edge.requests)
        for method, path, body in calls:
            for client, expected in ((admin, 403), (member, 403), (outsider, 404)):
                kwargs = {"json": body} if body is not None else {}
                response = await getattr(client, method)(path, **kwargs)
                assert response.status_code == expected, (path, response.text)
    assert len(edge.requests) == requests_before  # nobody but the owner reached Stripe
    async with db.transaction() as session:
        assert await session.scalar(select(func.count()).select_from(CreditPurchase)) == 0


async def test_auto_recharge_refills_the_pool_once_with_cooldown_and_monthly_cap(
    db: Database, stripe_app: FastAPI, stripe_client: httpx.AsyncClient, edge: Edge
) -> None:
    _, org_id = await team_owner(stripe_app, stripe_client)
    refused = await stripe_client.put(
        f"/api/orgs/{org_id}/auto-recharge",
        json={"enabled": True, "threshold": 50, "pack_size": 100, "monthly_cap": 2, "cooldown_minutes": 60},
    )
    assert (refused.status_code, refused.json()["error"]) == (400, "no_saved_card")
    assert (await stripe_client.post(f"/api/orgs/{org_id}/billing/portal")).status_code == 200
    await asyncio.to_thread(card, sdk(edge.url), await org_customer(db, org_id))
    rule = {"enabled": True, "threshold": 50, "pack_size": 100, "monthly_cap": 2, "cooldown_minutes": 60}
    saved = await stripe_client.put(f"/api/orgs/{org_id}/auto-recharge", json=rule)
    assert saved.status_code == 200, saved.text
    assert saved.json()["has_saved_card"] is True

    client = make_client(stripe_app.state.settings)

    async def recharge() -> auto_recharge.RechargeOutcome:
        return await auto_recharge.maybe_recharge(
            db, client, user_id=None, org_id=org_id, now=stripe_app.state.clock(), catalog=load_catalog()
        )

    assert (await recharge()).status == "granted"  # a new pool holds Free's 20 credits: below 50
    assert (await pool(stripe_client, org_id))["purchased_credits_remaining"] == 100
    # Two charges that both see a low balance at once: one recharge (the first one's cooldown holds).
    async with db.transaction() as session:
        await billing.adjust(session, user_id=None, org_id=org_id, amount=-110, reason="spent", admin_id=None, now=T0)
    outcomes = await asyncio.gather(recharge(), recharge())
    assert sorted(o.status for o in outcomes) == ["skipped", "skipped"]
    stripe_app.state.clock.advance(minutes=61)
    outcomes = await asyncio.gather(recharge(), recharge())
    assert sorted(o.status for o in outcomes) == ["granted", "skipped"]
    stripe_app.state.clock.advance(minutes=61)
    async with db.transaction() as session:
        await billing.adjust(session, user_id=None, org_id=org_id, amount=-100, reason="spent", admin_id=None, now=T0)
    capped = await recharge()
    assert capped.reason == "monthly cap of 2 recharges reached"
    async with db.transaction() as session:
        bought = (await session.execute(select(CreditPurchase).order_by(CreditPurchase.id))).scalars().all()
    assert [(p.organization_id, p.payment_status) for p in bought] == [(org_id, "completed")] * 2
    intents = edge.posted("/v1/payment_intents")
    assert all(r.params["metadata"]["org_id"] == str(org_id) for r in intents)
    customer = await org_customer(db, org_id)
    assert all(r.params["customer"] == customer for r in intents)


async def test_extra_seats_of_a_paid_pool_are_billed_by_a_seats_subscription(
    db: Database, stripe_app: FastAPI, stripe_client: httpx.AsyncClient, edge: Edge
) -> None:
    await sync_prices(db, make_client(stripe_app.state.settings), load_catalog(), now=T0)
    async with db.transaction() as session:
        pro_id = (
            await session.execute(select(SubscriptionTier.id).where(SubscriptionTier.name == "professional"))
        ).scalar_one()
    _, org_id = await team_owner(stripe_app, stripe_client)
    response = await stripe_client.post(f"/api/orgs/{org_id}/subscription/upgrade", json={"tier_id": pro_id})
    paid = await asyncio.to_thread(pay_checkout, edge, response.json()["checkout_url"].rsplit("/", 1)[1])
    stripe_sdk = sdk(edge.url)
    plan = await asyncio.to_thread(stripe_sdk.v1.subscriptions.retrieve, paid["subscription"])
    first = (await asyncio.to_thread(stripe_sdk.v1.invoices.retrieve, str(plan.latest_invoice))).to_dict()
    await deliver(stripe_client, make_event("checkout.session.completed", paid))
    await deliver(stripe_client, make_event("invoice.paid", first))
    assert (await pool(stripe_client, org_id))["tier"]["name"] == "professional"  # 5 members included, $15 a seat

    async def join() -> dict[str, Any]:
        async with http_client(stripe_app) as client:
            user = await register(client)
            made = await stripe_client.post(f"/api/orgs/{org_id}/invitations", json={"email": user["email"]})
            accepted = await client.post("/api/orgs/invitations/accept", json={"token": made.json()["token"]})
            assert accepted.status_code == 200, accepted.text
            return user

    for _ in range(4):
        await join()
    seat_calls = [r for r in edge.posted("/v1/subscriptions") if r.params.get("metadata", {}).get("kind") == "seats"]
    assert seat_calls == []  # 5 members: nothing extra to bill
    sixth = await join()
    await join()
    seats = (await stripe_client.get(f"/api/orgs/{org_id}/billing")).json()["seats"]
    assert (seats["members"], seats["extra_seats"], seats["extra_seats_cost"]) == (7, 2, "30.00")

    customer = await org_customer(db, org_id)
    listed = await asyncio.to_thread(stripe_sdk.v1.subscriptions.list, params={"customer": customer})
    billed = [s for s in (sub.to_dict() for sub in listed.data) if s["metadata"].get("kind") == "seats"]
    assert len(billed) == 1
    assert billed[0]["items"]["data"][0]["quantity"] == 2
    assert billed[0]["metadata"]["org_id"] == str(org_id)

    # A member removed: the seat bought for them leaves the bill.
    assert (await stripe_client.delete(f"/api/orgs/{org_id}/members/{sixth['id']}")).status_code == 204
    seats = (await stripe_client.get(f"/api/orgs/{org_id}/billing")).json()["seats"]
    assert (seats["members"], seats["extra_seats"], seats["extra_seats_cost"]) == (6, 1, "15.00")
    again = await asyncio.to_thread(stripe_sdk.v1.subscriptions.retrieve, billed[0]["id"])
    assert again.to_dict()["items"]["data"][0]["quantity"] == 1
    # Its events are not the plan's: the pool stays on Professional.
    ended = billed[0] | {"status": "canceled"}
    outcome = await deliver(stripe_client, make_event("customer.subscription.deleted", ended))
    assert "extra seats" in outcome.json()["outcome"]
    assert (await pool(stripe_client, org_id))["tier"]["name"] == "professional"

    # The plan ends (cancelled in the Portal, say): no seat is billed beyond it.
    plan_ended = (await asyncio.to_thread(stripe_sdk.v1.subscriptions.retrieve, plan.id)).to_dict()
    outcome = await deliver(
        stripe_client, make_event("customer.subscription.deleted", plan_ended | {"status": "canceled"})
    )
    assert "back to Free" in outcome.json()["outcome"]
    seats_after = await asyncio.to_thread(stripe_sdk.v1.subscriptions.retrieve, billed[0]["id"])
    assert seats_after.to_dict()["status"] == "canceled"


async def test_a_team_chat_that_leaves_the_pool_low_runs_the_pools_auto_recharge(
    db: Database, stripe_app: FastAPI, stripe_client: httpx.AsyncClient, edge: Edge
) -> None:
    _, org_id = await team_owner(stripe_app, stripe_client)
    assert (await stripe_client.post(f"/api/orgs/{org_id}/billing/portal")).status_code == 200
    await asyncio.to_thread(card, sdk(edge.url), await org_customer(db, org_id))
    rule = {"enabled": True, "threshold": 16, "pack_size": 100, "monthly_cap": 3, "cooldown_minutes": 60}
    assert (await stripe_client.put(f"/api/orgs/{org_id}/auto-recharge", json=rule)).status_code == 200
    async with db.transaction() as session:  # the pool holds 16 of its 20 Free credits
        await billing.adjust(session, user_id=None, org_id=org_id, amount=-4, reason="spent", admin_id=None, now=T0)

    async with http_client(stripe_app) as member:
        user = await register(member)
        made = await stripe_client.post(f"/api/orgs/{org_id}/invitations", json={"email": user["email"]})
        await member.post("/api/orgs/invitations/accept", json={"token": made.json()["token"]})
        reply = await member.post("/api/chat", json={"message": "hello", "org_id": org_id})
        assert reply.status_code == 200, reply.text
        assert reply.json()["credits_remaining"] == 15
    # The reply's background task bought the pool's pack with the organization's card.
    account = await pool(stripe_client, org_id)
    assert (account["credits_remaining"], account["purchased_credits_remaining"]) == (115, 100)
    intent = edge.posted("/v1/payment_intents")[-1].params
    assert (intent["customer"], intent["metadata"]["org_id"]) == (await org_customer(db, org_id), str(org_id))
