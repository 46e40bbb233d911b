"""Stripe mode in the browser: the buttons go to Stripe Checkout, and back on /billing the
credits appear once Stripe's webhook confirms the payment (never because of the redirect).

Stripe is reached at the network edge only: ``localstripe`` plus the payments suite's
small edge server for Checkout Sessions (``tests.payments.edge``), with the real SDK.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, expect

from devops_agent.billing.catalog import load_catalog
from devops_agent.billing.periods import utcnow
from devops_agent.config import Settings
from devops_agent.db import Database
from devops_agent.payments.stripe_client import make_client
from devops_agent.payments.sync import sync_prices
from tests.browser.conftest import LiveServer, serve
from tests.browser.helpers import DESKTOP, assert_accessible, expect_counter, sign_up, uncaught_errors, unique_name
from tests.payments.conftest import make_event, signed, stripe_settings
from tests.payments.edge import Edge, free_port, pay_checkout, running_edge


@pytest.fixture(scope="module")
def edge() -> Iterator[Edge]:
    with running_edge() as server:
        yield server


@pytest.fixture(scope="module")
def stripe_server(edge: Edge, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    port = free_port()
    settings = {**stripe_settings(edge), "public_base_url": f"http://127.0.0.1:{port}"}
    with serve(tmp_path_factory.mktemp("stripe-server"), port=port, **settings) as server:
        # Its own thread: Playwright's sync API keeps an event loop running in this one.
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, _sync_prices(server.settings)).result()
        yield server


async def _sync_prices(settings: Settings) -> None:
    """`devops-agent stripe sync`: a Product and Price per tier and pack, as an operator runs it once."""
    db = Database(settings.database_url)
    try:
        await sync_prices(db, make_client(settings), load_catalog(), now=utcnow())
    finally:
        await db.dispose()


def deliver(server: LiveServer, event_type: str, obj: dict[str, object]) -> None:
    """POST a signed event to the webhook, as Stripe does."""
    body, header = signed(make_event(event_type, obj))
    response = httpx.post(
        f"{server.url}/api/stripe/webhook",
        content=body,
        headers={"Stripe-Signature": header, "Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text


def test_pack_and_plan_buttons_go_to_checkout_and_credits_come_with_the_webhook(
    browser: Browser, stripe_server: LiveServer, edge: Edge, screenshots: Path
) -> None:
    context = browser.new_context(base_url=stripe_server.url, viewport=DESKTOP)
    page = context.new_page()
    errors = uncaught_errors(page)
    try:
        sign_up(page, unique_name("stripe"))
        page.goto("/billing")
        expect(page.get_by_text("Payments are handled by Stripe")).to_be_visible()
        expect(page.locator("[data-demo-note]")).to_have_count(0)
        expect(page.locator("[data-tier-badge]")).to_have_text("Free plan")
        assert_accessible(page)

        page.get_by_role("button", name="Upgrade to Starter").click()
        confirm = page.get_by_role("dialog", name="Upgrade to Starter?")
        expect(confirm).to_contain_text("$19")
        confirm.get_by_role("button", name="Upgrade to Starter").click()
        page.wait_for_url(re.compile(re.escape(edge.url) + r"/pay/"))
        page.goto("/billing?checkout=cancelled")
        expect(page.locator("[data-billing-status]")).to_have_text("Checkout was cancelled; nothing was charged.")
        expect(page.locator("[data-tier-badge]")).to_have_text("Free plan")

        page.get_by_role("button", name="Buy 250 credits for $20").click()
        page.get_by_role("dialog", name="Buy 250 credits?").get_by_role("button", name="Buy for $20").click()
        page.wait_for_url(re.compile(re.escape(edge.url) + r"/pay/"))
        session_id = page.url.rsplit("/", 1)[1]
        paid = pay_checkout(edge, session_id)  # the customer pays on Stripe's page

        page.goto("/billing?checkout=success")
        expect(page.locator("[data-billing-status]")).to_contain_text("Your payment is being confirmed")
        expect(page).to_have_url(re.compile(r"/billing$"))
        expect(page.locator("[data-purchased]")).to_have_text("0")  # the redirect alone grants nothing

        deliver(stripe_server, "checkout.session.completed", paid)
        expect(page.locator("[data-billing-status]")).to_have_text(
            "Payment confirmed. You now have 270 credits on the Free plan.", timeout=20_000
        )
        expect(page.locator("[data-purchased]")).to_have_text("250")
        expect_counter(page, 270)
        assert not errors, errors
    finally:
        context.close()
