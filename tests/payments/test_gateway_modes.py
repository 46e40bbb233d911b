"""Demo stays the default without a key; with one, Stripe's failures are clear JSON errors."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from devops_agent.billing.models import CreditPurchase
from devops_agent.config import Settings
from devops_agent.db import Database
from devops_agent.payments.demo import DemoGateway
from devops_agent.payments.gateway import get_gateway
from devops_agent.payments.stripe_gateway import StripeGateway
from tests.payments.edge import SECRET_KEY, free_port
from tests.web.conftest import build_app, make_client, register

SQLITE_ONLY = pytest.mark.parametrize("db", ["sqlite"], indirect=True)


def test_gateway_is_demo_unless_a_secret_key_is_set() -> None:
    assert isinstance(get_gateway(Settings(_env_file=None)), DemoGateway)  # type: ignore[call-arg]
    assert isinstance(get_gateway(Settings(_env_file=None, stripe_secret_key=SECRET_KEY)), StripeGateway)  # type: ignore[call-arg]


@SQLITE_ONLY
async def test_demo_mode_refuses_stripe_endpoints_clearly(db: Database, tmp_path: Path) -> None:
    async with make_client(build_app(db, tmp_path)) as client:
        await register(client)
        portal = await client.post("/api/stripe/portal")
        webhook = await client.post("/api/stripe/webhook", json={"id": "evt_1", "type": "invoice.paid"})

    assert (portal.status_code, portal.json()["error"]) == (400, "payments_not_configured")
    assert (webhook.status_code, webhook.json()["error"]) == (400, "invalid_signature")


@SQLITE_ONLY
async def test_stripe_unreachable_is_a_json_error_and_changes_nothing(db: Database, tmp_path: Path) -> None:
    app = build_app(db, tmp_path, stripe_secret_key=SECRET_KEY, stripe_api_base=f"http://127.0.0.1:{free_port()}")
    async with make_client(app) as client:
        await register(client)
        response: httpx.Response = await client.post("/api/credits/purchase", json={"pack_size": 100})
        subscription = (await client.get("/api/subscription")).json()["subscription"]

    assert response.status_code == 502
    assert response.json()["error"] == "payment_provider_error"
    assert subscription["credits_remaining"] == 20
    async with db.transaction() as session:
        assert (await session.execute(select(func.count()).select_from(CreditPurchase))).scalar_one() == 0
