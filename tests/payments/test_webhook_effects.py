"""What an event did, as ``handle_event`` reports it: the effect the endpoint hands to notifications, once.

These call ``handle_event`` directly (the HTTP endpoint is in ``test_webhooks.py``), on
SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from devops_agent.db import Database
from devops_agent.payments.webhooks import (
    Owner,
    PackPaid,
    PackRefunded,
    PaymentFailed,
    PlanRenewed,
    handle_event,
)
from tests.factories import T0
from tests.payments.conftest import make_event
from tests.payments.test_webhooks import _starter_customer, invoice, pending_purchase, session_completed


async def test_a_pack_paid_then_refunded_reports_each_once(db: Database) -> None:
    user_id, purchase_id = await pending_purchase(db, amount=250)
    paid = session_completed(user_id, purchase_id)
    refund = make_event(
        "charge.refunded",
        {"id": "ch_1", "object": "charge", "payment_intent": f"pi_p{purchase_id}", "refunded": True},
    )

    first, again = await handle_event(db, paid, now=T0), await handle_event(db, paid, now=T0)
    refunded = await handle_event(db, refund, now=T0)

    assert first.effect == PackPaid(purchase_id=purchase_id, credits=250)
    assert (again.duplicate, again.effect) == (True, first.effect)  # reported again: its email may be lost
    assert refunded.effect == PackRefunded(purchase_id=purchase_id, reason="refunded", shortfall=0)


async def test_a_paid_period_and_failed_payments_report_their_account(db: Database) -> None:
    user_id, sub_id, t = await _starter_customer(db)
    owner = Owner(user_id=user_id)
    renewal = invoice("invoice.paid", user_id, sub_id, t)
    failed = invoice("invoice.payment_failed", user_id, sub_id, t + 31 * 86400)
    failed["data"]["object"]["amount_due"] = 1900
    stale = invoice("invoice.payment_failed", user_id, sub_id, t - 31 * 86400)  # older than the state applied

    renewed = await handle_event(db, renewal, now=T0)
    past_due = await handle_event(db, failed, now=T0)
    ignored = await handle_event(db, stale, now=T0)

    assert renewed.effect == PlanRenewed(owner=owner, tier="starter", period_start=T0, period_end=T0 + timedelta(31))
    assert past_due.effect == PaymentFailed(owner, failed["data"]["object"]["id"], Decimal("19.00"))
    # A failure that changes no state is still one the account's owner hears of.
    assert ignored.outcome.startswith("ignored")
    assert ignored.effect == PaymentFailed(owner, stale["data"]["object"]["id"], None)
