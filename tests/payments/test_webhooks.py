"""The webhook: signatures checked, each event applied once, subscription events in any order.

Every test runs on SQLite and PostgreSQL (the ``db`` fixture) through the real
HTTP endpoint, with payloads signed by ``stripe.WebhookSignature``.
"""

from __future__ import annotations

import asyncio
import copy
import time
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select, update

from devops_agent import billing
from devops_agent.billing.models import CreditLedger, CreditPurchase, LedgerKind, SubscriptionTier
from devops_agent.db import Database
from devops_agent.payments.models import StripeEvent
from tests.factories import T0, account, make_user
from tests.payments.conftest import deliver, make_event


async def pending_purchase(db: Database, amount: int = 250) -> tuple[int, int]:
    async with db.transaction() as session:
        user = await make_user(session)
        purchase = await billing.create_purchase(
            session, user_id=user.id, credits_amount=amount, price_paid=Decimal("20.00"), now=T0
        )
        return user.id, purchase.id


def session_completed(user_id: int, purchase_id: int, *, paid: bool = True) -> dict[str, Any]:
    return make_event(
        "checkout.session.completed",
        {
            "id": f"cs_test_p{purchase_id}",
            "object": "checkout.session",
            "mode": "payment",
            "payment_status": "paid" if paid else "unpaid",
            "client_reference_id": str(user_id),
            "customer": f"cus_u{user_id}",
            "payment_intent": f"pi_p{purchase_id}",
            "metadata": {"kind": "pack", "purchase_id": str(purchase_id), "user_id": str(user_id)},
        },
    )


async def state(db: Database, user_id: int, purchase_id: int) -> tuple[int, str, int]:
    """Purchased balance, purchase status and number of recorded events."""
    async with db.transaction() as session:
        sub = await account(session, user_id)
        purchase = await session.get(CreditPurchase, purchase_id)
        assert purchase is not None
        events = (await session.execute(select(func.count()).select_from(StripeEvent))).scalar_one()
        return sub.purchased_credits_remaining, purchase.payment_status, int(events)


async def test_bad_signature_is_refused_and_changes_nothing(db: Database, stripe_client: httpx.AsyncClient) -> None:
    user_id, purchase_id = await pending_purchase(db)
    event = session_completed(user_id, purchase_id)

    forged = await deliver(stripe_client, event, secret="whsec_not_ours")
    unsigned = await stripe_client.post("/api/stripe/webhook", json=event)

    for response in (forged, unsigned):
        assert response.status_code == 400
        assert response.json()["error"] == "invalid_signature"
    assert await state(db, user_id, purchase_id) == (0, "pending", 0)


async def test_stale_timestamp_is_refused(db: Database, stripe_client: httpx.AsyncClient) -> None:
    user_id, purchase_id = await pending_purchase(db)

    response = await deliver(stripe_client, session_completed(user_id, purchase_id), timestamp=int(time.time()) - 3600)

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_signature"
    assert await state(db, user_id, purchase_id) == (0, "pending", 0)


async def test_redelivered_event_grants_once(db: Database, stripe_client: httpx.AsyncClient) -> None:
    user_id, purchase_id = await pending_purchase(db)
    event = session_completed(user_id, purchase_id)

    first = await deliver(stripe_client, event)
    second = await deliver(stripe_client, event)

    assert first.status_code == second.status_code == 200
    assert (first.json()["duplicate"], second.json()["duplicate"]) == (False, True)
    assert await state(db, user_id, purchase_id) == (250, "completed", 1)


async def test_unpaid_checkout_waits_for_async_payment(db: Database, stripe_client: httpx.AsyncClient) -> None:
    user_id, purchase_id = await pending_purchase(db)
    completed = session_completed(user_id, purchase_id, paid=False)
    succeeded = make_event("checkout.session.async_payment_succeeded", completed["data"]["object"])

    await deliver(stripe_client, completed)
    assert (await state(db, user_id, purchase_id))[:2] == (0, "pending")
    await deliver(stripe_client, succeeded)
    assert (await state(db, user_id, purchase_id))[:2] == (250, "completed")


async def test_twenty_concurrent_deliveries_grant_once(db: Database, stripe_client: httpx.AsyncClient) -> None:
    user_id, purchase_id = await pending_purchase(db)
    event = session_completed(user_id, purchase_id)

    responses = await asyncio.gather(*(deliver(stripe_client, event) for _ in range(20)))

    assert [r.status_code for r in responses] == [200] * 20
    assert sum(not r.json()["duplicate"] for r in responses) == 1
    assert await state(db, user_id, purchase_id) == (250, "completed", 1)
    async with db.transaction() as session:
        sub = await account(session, user_id)
        grants = await session.execute(
            select(func.count()).where(
                CreditLedger.purchase_id == purchase_id, CreditLedger.kind == LedgerKind.PURCHASE.value
            )
        )
        assert grants.scalar_one() == 1
        assert await billing.ledger_sums(session, subscription_id=sub.id) == billing.Balance(
            sub.credits_remaining, sub.purchased_credits_remaining
        )


async def _starter_priced(db: Database) -> None:
    async with db.transaction() as session:
        await session.execute(
            update(SubscriptionTier).where(SubscriptionTier.name == "starter").values(stripe_price_id="price_starter")
        )


async def _starter_customer(db: Database) -> tuple[int, str, int]:
    """A Free user about to subscribe to Starter through Stripe: user id, subscription id, T0 as a timestamp."""
    await _starter_priced(db)
    async with db.transaction() as session:
        user_id = (await make_user(session)).id
    return user_id, f"sub_u{user_id}", int(T0.timestamp())


def invoice(event_type: str, user_id: int, sub_id: str, start: int, *, price: str = "price_starter") -> dict[str, Any]:
    """An invoice in the current API shape (subscription under ``parent``, price under ``pricing``)."""
    end = start + 31 * 86400
    return make_event(
        event_type,
        {
            "id": f"in_{sub_id}_{start}",
            "object": "invoice",
            "customer": f"cus_u{user_id}",
            "parent": {"type": "subscription_details", "subscription_details": {"subscription": sub_id}},
            "lines": {
                "data": [
                    {
                        "period": {"start": start, "end": end},
                        "pricing": {"price_details": {"price": price}},
                        "parent": {"subscription_item_details": {"proration": False}},
                    }
                ]
            },
            "metadata": {"user_id": str(user_id)},
        },
        created=start,  # Stripe finalizes a period's invoice when the period starts
    )


def subscription_event(event_type: str, user_id: int, sub_id: str, status: str, created: int) -> dict[str, Any]:
    return make_event(
        event_type,
        {
            "id": sub_id,
            "object": "subscription",
            "customer": f"cus_u{user_id}",
            "status": status,
            "cancel_at_period_end": False,
            "items": {"data": [{"price": {"id": "price_starter"}}]},
            "metadata": {"user_id": str(user_id)},
        },
        created=created,
    )


async def plan(db: Database, user_id: int) -> tuple[str, str, int]:
    async with db.transaction() as session:
        sub = await account(session, user_id)
        return sub.tier.name, sub.payment_status, sub.credits_remaining


async def test_subscription_events_out_of_order_never_move_backwards(
    db: Database, stripe_app: FastAPI, stripe_client: httpx.AsyncClient
) -> None:
    user_id, sub_id, t = await _starter_customer(db)

    await deliver(stripe_client, invoice("invoice.paid", user_id, sub_id, t))
    assert await plan(db, user_id) == ("starter", "active", 200)

    # past_due (newer) arrives before active (older): the older one must not undo it.
    updated, deleted = "customer.subscription.updated", "customer.subscription.deleted"
    stripe_app.state.clock.advance(hours=1)
    await deliver(stripe_client, subscription_event(updated, user_id, sub_id, "past_due", t + 20))
    stale = await deliver(stripe_client, subscription_event(updated, user_id, sub_id, "active", t + 10))
    assert stale.json()["outcome"].startswith("ignored")
    assert await plan(db, user_id) == ("starter", "past_due", 200)

    # Deleted, then a late update and a late paid invoice: the plan stays ended.
    await deliver(stripe_client, subscription_event(deleted, user_id, sub_id, "canceled", t + 30))
    await deliver(stripe_client, subscription_event(updated, user_id, sub_id, "active", t + 25))
    await deliver(stripe_client, invoice("invoice.paid", user_id, sub_id, t))
    assert await plan(db, user_id) == ("free", "cancelled", 20)


async def test_late_invoice_for_an_earlier_period_changes_nothing(
    db: Database, stripe_app: FastAPI, stripe_client: httpx.AsyncClient
) -> None:
    user_id, sub_id, t = await _starter_customer(db)
    second = invoice("invoice.paid", user_id, sub_id, t + 31 * 86400)
    first = invoice("invoice.paid", user_id, sub_id, t)

    clock = stripe_app.state.clock
    await deliver(stripe_client, first)
    clock.advance(days=32)
    await deliver(stripe_client, second)
    async with db.transaction() as session:
        sub = await account(session, user_id, now=clock.now)
        period = sub.current_period_start
    replay = await deliver(stripe_client, make_event("invoice.paid", first["data"]["object"]))

    assert replay.json()["outcome"].endswith("payment active")
    async with db.transaction() as session:
        sub = await account(session, user_id, now=clock.now)
        assert sub.current_period_start == period


async def test_dispute_claws_back_what_is_left_and_records_the_shortfall(
    db: Database, stripe_client: httpx.AsyncClient
) -> None:
    user_id, purchase_id = await pending_purchase(db)
    await deliver(stripe_client, session_completed(user_id, purchase_id))
    async with db.transaction() as session:  # 20 monthly + 250 purchased; spend 100 of the purchased
        await billing.adjust(session, user_id=user_id, amount=-120, reason="spent", admin_id=None, now=T0)
    dispute = make_event(
        "charge.dispute.created",
        {"id": "dp_1", "object": "dispute", "charge": "ch_1", "payment_intent": f"pi_p{purchase_id}", "amount": 2000},
    )

    response = await deliver(stripe_client, dispute)

    assert response.status_code == 200
    async with db.transaction() as session:
        purchase = await session.get(CreditPurchase, purchase_id)
        sub = await account(session, user_id)
        assert purchase is not None
        assert (purchase.payment_status, purchase.clawback_shortfall) == ("refunded", 100)
        assert (sub.credits_remaining, sub.purchased_credits_remaining) == (0, 0)


async def test_late_paid_invoice_does_not_hide_a_newer_failed_renewal(
    db: Database, stripe_app: FastAPI, stripe_client: httpx.AsyncClient
) -> None:
    user_id, sub_id, t = await _starter_customer(db)
    paid = invoice("invoice.paid", user_id, sub_id, t)
    failed = invoice("invoice.payment_failed", user_id, sub_id, t + 31 * 86400)

    await deliver(stripe_client, failed)  # Stripe retried the first delivery of `paid` for days
    await deliver(stripe_client, paid)

    assert await plan(db, user_id) == ("starter", "past_due", 200)


async def test_concurrent_subscription_events_end_in_the_newest_state(
    db: Database, stripe_app: FastAPI, stripe_client: httpx.AsyncClient
) -> None:
    user_id, sub_id, t = await _starter_customer(db)
    await deliver(stripe_client, invoice("invoice.paid", user_id, sub_id, t))
    statuses = ["past_due", "active", "unpaid"] * 4  # the newest (created last) is "unpaid"
    events = [
        subscription_event("customer.subscription.updated", user_id, sub_id, status, t + 1 + i)
        for i, status in enumerate(statuses)
    ]

    responses = await asyncio.gather(*(deliver(stripe_client, e) for e in reversed(events)))

    assert [r.status_code for r in responses] == [200] * len(events)
    assert (await plan(db, user_id))[1] == "unpaid"


def _with(event: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    """``event`` with the field at ``path`` set to ``value`` (a copy)."""
    changed = copy.deepcopy(event)
    target = changed
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return changed


ODD_FIELDS = [
    (("created",), "x"),
    (("created",), 1e12),
    (("created",), 10**30),
    (("data", "object", "metadata", "purchase_id"), "9" * 40),
    (("data", "object", "metadata", "purchase_id"), "9" * 5000),
    (("data", "object", "metadata", "purchase_id"), str(2**63)),
]


@pytest.mark.parametrize(("path", "value"), ODD_FIELDS, ids=lambda v: repr(v)[:24])
async def test_a_signed_event_with_an_odd_field_is_rejected_recorded_and_changes_nothing(
    db: Database, stripe_client: httpx.AsyncClient, path: tuple[str, ...], value: Any
) -> None:
    user_id, purchase_id = await pending_purchase(db)
    event = _with(session_completed(user_id, purchase_id), path, value)

    first = await deliver(stripe_client, event)
    again = await deliver(stripe_client, event)

    for response in (first, again):
        assert response.status_code == 400, response.text
        assert response.json()["error"] == "invalid_event"
    assert await state(db, user_id, purchase_id) == (0, "pending", 1)  # nothing granted, one record
    async with db.transaction() as session:
        recorded = (await session.execute(select(StripeEvent))).scalar_one()
    assert (recorded.event_id, recorded.type) == (event["id"], "checkout.session.completed")
    assert recorded.outcome.startswith("rejected: ")
    # The same purchase still completes with a well-formed event.
    fine = await deliver(stripe_client, session_completed(user_id, purchase_id))
    assert fine.status_code == 200, fine.text
    assert await state(db, user_id, purchase_id) == (250, "completed", 2)


async def test_an_invoice_with_an_odd_period_is_rejected_and_starts_nothing(
    db: Database, stripe_client: httpx.AsyncClient
) -> None:
    user_id, sub_id, t = await _starter_customer(db)
    event = invoice("invoice.paid", user_id, sub_id, t)
    event["data"]["object"]["lines"]["data"][0]["period"]["end"] = "soon"

    response = await deliver(stripe_client, event)

    assert (response.status_code, response.json()["error"]) == (400, "invalid_event")
    assert await plan(db, user_id) == ("free", "active", 20)


async def test_an_event_id_too_long_to_record_is_rejected(db: Database, stripe_client: httpx.AsyncClient) -> None:
    user_id, purchase_id = await pending_purchase(db)
    event = session_completed(user_id, purchase_id)
    event["id"] = "evt_" + "y" * 300

    first = await deliver(stripe_client, event)
    again = await deliver(stripe_client, event)

    assert [(r.status_code, r.json()["error"]) for r in (first, again)] == [(400, "invalid_event")] * 2
    assert await state(db, user_id, purchase_id) == (0, "pending", 1)


async def test_a_value_too_long_for_its_column_is_never_a_500(db: Database, stripe_client: httpx.AsyncClient) -> None:
    """PostgreSQL refuses a subscription id longer than its column: rejected. SQLite keeps any length."""
    user_id, _, t = await _starter_customer(db)
    event = subscription_event("customer.subscription.updated", user_id, "sub_" + "x" * 300, "active", t)

    response = await deliver(stripe_client, event)

    if db.is_sqlite:
        assert response.status_code == 200, response.text
    else:
        assert (response.status_code, response.json()["error"]) == (400, "invalid_event")
        async with db.transaction() as session:
            outcome = (await session.execute(select(StripeEvent.outcome))).scalar_one()
        assert outcome.startswith("rejected: ")
    assert await plan(db, user_id) == ("free", "active", 20)
