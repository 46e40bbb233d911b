"""The web layer queues emails after its transaction commits: receipts, a team pool running low, Stripe's events."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select

from devops_agent import billing, notifications
from devops_agent.billing.models import UserSubscription
from devops_agent.db import Database
from devops_agent.notifications import Notifier
from devops_agent.web.api import stripe as stripe_api
from tests.factories import T0, make_user
from tests.notifications.conftest import Inbox
from tests.orgs.factories import add_member, make_org
from tests.orgs.test_api import join, pro
from tests.payments.conftest import deliver, make_event
from tests.payments.edge import WEBHOOK_SECRET
from tests.web.conftest import build_app, make_client, register


async def test_buying_a_pack_over_http_emails_a_receipt(
    db: Database, tmp_path: Path, inbox: Inbox, make_notifier: Callable[..., Notifier]
) -> None:
    app = build_app(db, tmp_path)
    notifier = notifications.install(db, make_notifier(db))
    async with make_client(app) as client:
        user = await register(client, "buyer")
        response = await client.post("/api/credits/purchase", json={"pack_size": 250})
        assert response.status_code == 200
        # A retry with the same Idempotency-Key replays the answer and sends nothing more.
        for _ in range(2):
            await client.post("/api/credits/purchase", json={"pack_size": 100}, headers={"Idempotency-Key": "k1"})
    await notifier.wait_idle()
    notifications.forget(db)
    assert sorted(inbox.subjects()) == ["Receipt: 100 DevOps Agent credits", "Receipt: 250 DevOps Agent credits"]
    assert all(m["To"] == f"{user['username']}@example.com" for m in inbox.messages)


async def test_buying_a_pack_for_a_team_pool_emails_the_owner_a_receipt(
    db: Database, tmp_path: Path, inbox: Inbox, make_notifier: Callable[..., Notifier]
) -> None:
    app = build_app(db, tmp_path)
    notifier = notifications.install(db, make_notifier(db))
    async with make_client(app) as client:
        await pro(client, "teamboss")
        org = (await client.post("/api/orgs", json={"name": "Night Shift"})).json()["organization"]
        bought = await client.post(f"/api/orgs/{org['id']}/credits/purchase", json={"pack_size": 250})
        assert bought.status_code == 200, bought.text
        assert bought.json()["credits_remaining"] == 270  # the pool's 20 Free credits + the pack
    await notifier.wait_idle()
    notifications.forget(db)
    # The personal upgrade sends nothing; the pack bought for the pool sends its receipt to the owner who paid.
    assert [(m["To"], str(m["Subject"])) for m in inbox.messages] == [
        ("teamboss@example.com", "Receipt: 250 DevOps Agent credits")
    ]


async def test_a_team_chat_that_drains_the_pool_warns_the_owner(
    db: Database, tmp_path: Path, inbox: Inbox, make_notifier: Callable[..., Notifier]
) -> None:
    app = build_app(db, tmp_path)
    notifier = notifications.install(db, make_notifier(db))
    async with make_client(app) as owner, make_client(app) as dev_client:
        boss = await pro(owner, "boss")
        org = (await owner.post("/api/orgs", json={"name": "Night Shift"})).json()["organization"]
        dev = await register(dev_client)
        await join(owner, org["id"], dev_client, dev)
        async with db.transaction() as s:  # the pool is down to 5 credits
            await billing.adjust(
                s, user_id=boss["id"], org_id=org["id"], amount=-15, reason="test", admin_id=None, now=app.state.clock()
            )
        reply = await dev_client.post("/api/chat", json={"message": "help", "org_id": org["id"]})
        assert reply.status_code == 200, reply.text
    await notifier.wait_idle()
    notifications.forget(db)
    # The invitation went to the member; the warning to the owner.
    assert {m["To"]: str(m["Subject"]) for m in inbox.messages} == {
        dev["email"]: "Join Night Shift on DevOps Agent",
        "boss@example.com": "Night Shift: only 4 team credits left",
    }


async def test_stripe_events_send_receipts_and_failed_renewal_notices_once(
    db: Database, tmp_path: Path, inbox: Inbox, make_notifier: Callable[..., Notifier]
) -> None:
    app = build_app(db, tmp_path, stripe_webhook_secret=WEBHOOK_SECRET)
    notifier = notifications.install(db, make_notifier(db))
    async with db.transaction() as s:
        user_id = (await make_user(s, now=T0)).id
        paid = await billing.create_purchase(
            s,
            user_id=user_id,
            credits_amount=500,
            price_paid=Decimal("35.00"),
            now=T0,
            stripe_checkout_session_id="cs_1",
        )
        await billing.grant_purchase(s, purchase_id=paid.id, now=T0)
        await billing.create_purchase(
            s,
            user_id=user_id,
            credits_amount=100,
            price_paid=Decimal("10.00"),
            now=T0,
            stripe_checkout_session_id="cs_2",
        )
        account = (await s.execute(select(UserSubscription).where(UserSubscription.user_id == user_id))).scalar_one()
        account.stripe_customer_id = "cus_1"

    def checkout(session_id: str, payment_status: str) -> dict[str, object]:
        obj = {
            "id": session_id,
            "mode": "payment",
            "payment_status": payment_status,
            "payment_intent": f"pi_{session_id}",
        }
        return make_event("checkout.session.completed", obj)

    completed = checkout("cs_1", "paid")
    unpaid = checkout("cs_2", "unpaid")  # still pending: no receipt yet
    failed = make_event(
        "invoice.payment_failed",
        {
            "id": "in_1",
            "customer": "cus_1",
            "amount_due": 1900,
            "parent": {"subscription_details": {"subscription": "sub_9"}},
        },
    )
    stranger = make_event("invoice.payment_failed", {"id": "in_2", "customer": "cus_unknown"})
    async with make_client(app) as client:
        for delivery in (completed, unpaid, failed, stranger, completed, failed):  # Stripe redelivers
            response = await deliver(client, delivery)
            assert response.status_code == 200, response.text
    await notifier.wait_idle()
    notifications.forget(db)
    assert sorted(inbox.subjects()) == ["Receipt: 500 DevOps Agent credits", "Your DevOps Agent payment failed"]
    failure = next(m for m in inbox.messages if "failed" in str(m["Subject"]))
    assert "payment of $19.00" in failure.get_payload()


async def test_a_team_pools_failed_renewal_is_emailed_to_its_owner_once(
    db: Database, tmp_path: Path, inbox: Inbox, make_notifier: Callable[..., Notifier]
) -> None:
    app = build_app(db, tmp_path, stripe_webhook_secret=WEBHOOK_SECRET)
    notifier = notifications.install(db, make_notifier(db))
    async with db.transaction() as s:
        owner = await make_user(s, username="olga")
        org = await make_org(s, owner=owner, name="Acme Ops")
        await add_member(s, org, owner=owner)
        pool = (
            await s.execute(select(UserSubscription).where(UserSubscription.organization_id == org.id))
        ).scalar_one()
        pool.stripe_customer_id = "cus_org"
    failed = make_event("invoice.payment_failed", {"id": "in_org", "customer": "cus_org", "amount_due": 7900})
    async with make_client(app) as client:
        for _ in range(2):  # Stripe redelivers
            response = await deliver(client, failed)
            assert response.status_code == 200, response.text
    await notifier.wait_idle()
    notifications.forget(db)
    assert inbox.subjects() == ["Acme Ops: the team's payment failed"]
    assert inbox.messages[0]["To"] == "olga@example.com"
    body = inbox.messages[0].get_payload(decode=True).decode()
    assert "payment of $79.00 for the Free plan of Acme Ops" in body
    assert f"http://agent.test/orgs/{org.id}" in body


async def test_a_receipt_lost_to_a_crash_after_the_webhooks_commit_comes_with_the_redelivery(
    db: Database,
    tmp_path: Path,
    inbox: Inbox,
    make_notifier: Callable[..., Notifier],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = build_app(db, tmp_path, stripe_webhook_secret=WEBHOOK_SECRET)
    notifier = notifications.install(db, make_notifier(db))
    async with db.transaction() as s:
        user_id = (await make_user(s, now=T0)).id
        await billing.create_purchase(
            s,
            user_id=user_id,
            credits_amount=500,
            price_paid=Decimal("35.00"),
            now=T0,
            stripe_checkout_session_id="cs_1",
        )
    obj = {"id": "cs_1", "mode": "payment", "payment_status": "paid", "payment_intent": "pi_cs_1"}
    completed = make_event("checkout.session.completed", obj)
    async with make_client(app) as client:
        with monkeypatch.context() as crash:  # the process dies once the credits are committed
            crash.setattr(stripe_api, "notify", _dead)
            assert (await deliver(client, completed)).status_code == 200
        for _ in range(2):  # Stripe redelivers: the receipt comes, once
            response = await deliver(client, completed)
            assert (response.status_code, response.json()["duplicate"]) == (200, True)
    await notifier.wait_idle()
    notifications.forget(db)
    assert inbox.subjects() == ["Receipt: 500 DevOps Agent credits"]


async def _dead(*_args: object, **_kwargs: object) -> None:
    """What a process that died after the webhook's commit does next: nothing."""
