"""``GET /metrics``: the counters move with chats, 402s, purchases and webhooks; the token or localhost guards it.

The metrics of an in-process app live in the test process's registry, shared by every
test: each test reads them before and after, and asserts on the difference.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import stripe
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from devops_agent import billing
from devops_agent.billing import books
from devops_agent.db import Database
from tests.factories import T0
from tests.orgs.test_api import pro
from tests.web.conftest import build_app, make_client, register

WEBHOOK_SECRET = "whsec_metrics_test"


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the exposition (0 when it is not there yet)."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


async def scrape(client: httpx.AsyncClient, **headers: str) -> str:
    response = await client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def signed_event(event_type: str) -> tuple[str, str]:
    body = json.dumps(
        {
            "id": f"evt_metrics_{time.time_ns()}",
            "object": "event",
            "type": event_type,
            "created": int(T0.timestamp()),
            "data": {"object": {"id": "cus_1", "object": "customer"}},
        }
    )
    return body, stripe.WebhookSignature.generate_signature_header(body, WEBHOOK_SECRET)


async def test_chat_402_purchase_and_webhooks_move_their_counters(db: Database, tmp_path: Path) -> None:
    app = build_app(db, tmp_path, stripe_webhook_secret=WEBHOOK_SECRET)
    async with make_client(app) as client:
        before = await scrape(client)
        user = await register(client)

        chat = await client.post("/api/chat", json={"message": "list my EC2 instances"})
        assert chat.status_code == 200, chat.text
        assert chat.json()["credits_used"] == 2  # the message and get_ec2_instances
        bought = await client.post("/api/credits/purchase", json={"pack_size": 100})
        assert bought.status_code == 200, bought.text
        async with db.transaction() as s:  # spend everything: the next message is refused
            account = await billing.get_account(s, user_id=user["id"], now=T0)
            await billing.adjust(s, user_id=user["id"], amount=-account.balance, reason="test", admin_id=None, now=T0)
        refused = await client.post("/api/chat", json={"message": "hello"})
        assert refused.status_code == 402, refused.text

        body, header = signed_event("customer.created")
        delivered = await client.post(
            "/api/stripe/webhook",
            content=body,
            headers={"Stripe-Signature": header, "Content-Type": "application/json"},
        )
        assert delivered.status_code == 200, delivered.text
        again = await client.post(
            "/api/stripe/webhook",
            content=body,
            headers={"Stripe-Signature": header, "Content-Type": "application/json"},
        )
        assert again.json()["duplicate"] is True
        forged = await client.post("/api/stripe/webhook", content=body, headers={"Stripe-Signature": "t=1,v1=00"})
        assert forged.status_code == 400

        after = await scrape(client)

    def moved(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert moved("devops_agent_charges_total", action="agent_message") == 1
    assert moved("devops_agent_charges_total", action="get_ec2_instances") == 1
    assert moved("devops_agent_credits_charged_total", action="agent_message") == 1
    assert moved("devops_agent_payment_required_total", reason="insufficient_credits") == 1
    assert moved("devops_agent_pack_purchases_total", outcome="completed") == 1
    assert moved("devops_agent_webhook_events_total", type="customer.created", outcome="ignored") == 1
    assert moved("devops_agent_webhook_events_total", type="customer.created", outcome="duplicate") == 1
    assert moved("devops_agent_webhook_events_total", type="unverified", outcome="invalid") == 1
    # Latency by route template: two chats (200 and 402), one purchase.
    assert (
        moved("devops_agent_http_request_duration_seconds_count", method="POST", route="/api/chat", status="200") == 1
    )
    assert (
        moved("devops_agent_http_request_duration_seconds_count", method="POST", route="/api/chat", status="402") == 1
    )
    assert (
        moved(
            "devops_agent_http_request_duration_seconds_count",
            method="POST",
            route="/api/credits/purchase",
            status="200",
        )
        == 1
    )
    # Figures read at scrape time.
    assert sample(after, "devops_agent_metrics_database_up") == 1
    assert sample(after, "devops_agent_outbox_backlog") >= 0
    assert "devops_agent_db_pool_connections" in after


async def test_a_pack_bought_for_a_team_pool_is_counted_like_a_personal_one(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await pro(client)
    org = (await client.post("/api/orgs", json={"name": "Counted"})).json()["organization"]
    before = await scrape(client)
    bought = await client.post(f"/api/orgs/{org['id']}/credits/purchase", json={"pack_size": 100})
    assert bought.status_code == 200, bought.text
    after = await scrape(client)
    completed = {"outcome": "completed"}
    moved = sample(after, "devops_agent_pack_purchases_total", **completed)
    assert moved - sample(before, "devops_agent_pack_purchases_total", **completed) == 1


async def test_routes_are_templates_not_raw_paths(app: FastAPI, client: httpx.AsyncClient) -> None:
    await register(client)
    for conversation in (101, 202):
        assert (await client.get(f"/api/conversations/{conversation}")).status_code == 404
    assert (await client.get("/no/such/page/12345")).status_code == 404
    text = await scrape(client)
    routes = {
        s.labels.get("route")
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "devops_agent_http_request_duration_seconds_count"
    }
    assert "/api/conversations/{conversation_id}" in routes
    assert "unmatched" in routes
    assert not any(r and ("101" in r or "12345" in r) for r in routes)


async def test_the_last_audit_is_a_metric(app: FastAPI, client: httpx.AsyncClient) -> None:
    text = await scrape(client)
    assert "devops_agent_books_audit_ok" not in text  # never ran: no figure rather than a false one
    report = await books.check_books(app.state.db, clock=lambda: T0)
    async with app.state.db.transaction() as s:
        await books.record_run(s, report)
    text = await scrape(client)
    assert sample(text, "devops_agent_books_audit_ok") == 1
    assert sample(text, "devops_agent_books_audit_discrepancies") == 0
    assert sample(text, "devops_agent_books_audit_last_run_timestamp_seconds") == T0.timestamp()


async def test_a_token_is_required_when_set(db: Database, tmp_path: Path) -> None:
    app = build_app(db, tmp_path, metrics_token="scrape-me")
    async with make_client(app) as client:
        assert (await client.get("/metrics")).status_code == 401
        assert (await client.get("/metrics", headers={"Authorization": "Bearer wrong"})).status_code == 401
        assert (await client.get("/metrics", headers={"Authorization": "Basic scrape-me"})).status_code == 401
        await scrape(client, Authorization="Bearer scrape-me")
    # With the token, a scrape from another host is fine.
    remote = httpx.ASGITransport(app=app, client=("203.0.113.7", 40000))
    async with httpx.AsyncClient(transport=remote, base_url="http://testserver") as client:
        assert (await client.get("/metrics", headers={"Authorization": "Bearer scrape-me"})).status_code == 200


async def test_without_a_token_only_localhost_is_answered(app: FastAPI, client: httpx.AsyncClient) -> None:
    await scrape(client)  # the test client comes from 127.0.0.1
    remote = httpx.ASGITransport(app=app, client=("203.0.113.7", 40000))
    async with httpx.AsyncClient(transport=remote, base_url="http://testserver") as other:
        response = await other.get("/metrics")
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"
