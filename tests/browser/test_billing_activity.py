"""/billing's Activity: every movement of the credits, readable, adding up to the balance shown."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.conftest import LiveServer
from tests.browser.helpers import DESKTOP, PHONE, assert_accessible, sign_up, uncaught_errors, unique_name


@pytest.fixture
def live_server(auto_approve_server: LiveServer) -> LiveServer:
    """Creates run at once here: these tests are about what a reply cost, not approval."""
    return auto_approve_server


def chat(page: Page, text: str) -> None:
    box = page.get_by_label("Message", exact=True)
    box.fill(text)
    with page.expect_response(lambda r: r.url.endswith("/api/chat") and r.request.method == "POST") as answer:
        box.press("Enter")
    assert answer.value.status == 200


def activity_sum(page: Page) -> int:
    cells = page.locator("[data-activity-rows] tr").evaluate_all("rows => rows.map(r => Number(r.dataset.credits))")
    return int(sum(cells))


@pytest.mark.parametrize(("device", "viewport"), [("desktop", DESKTOP), ("phone", PHONE)])
def test_activity_lists_every_movement_and_adds_up(
    browser: Browser, live_server: LiveServer, screenshots: Path, device: str, viewport: dict[str, int]
) -> None:
    context = browser.new_context(base_url=live_server.url, viewport=viewport)
    page = context.new_page()
    errors = uncaught_errors(page)
    try:
        sign_up(page, unique_name(f"activity{device}"))
        chat(page, "create a t3.micro instance named web-1")
        conversation = page.evaluate("new URLSearchParams(location.search).get('c')")

        page.goto("/billing")
        activity = page.locator("[data-activity]")
        rows = activity.locator("[data-activity-rows] tr")
        expect(rows).to_have_count(2)
        charge = rows.first
        expect(charge).to_contain_text("Agent use")
        expect(charge).to_contain_text("Message to the agent (1); Create an EC2 instance (5)")
        expect(charge).not_to_contain_text("create_ec2_instance")
        expect(charge.get_by_role("link", name="Open the conversation")).to_have_attribute(
            "href", f"/chat?c={conversation}"
        )
        expect(rows.last).to_contain_text("Monthly credits")
        expect(page.locator("[data-balance-total]")).to_have_text("14")
        assert activity_sum(page) == 14

        page.get_by_role("button", name="Buy 100 credits for $10").click()
        page.get_by_role("dialog", name="Buy 100 credits?").get_by_role("button", name="Buy for $10").click()
        expect(rows).to_have_count(3)
        expect(rows.first).to_contain_text("Credit pack bought")
        expect(page.locator("[data-balance-total]")).to_have_text("114")
        assert activity_sum(page) == 114

        page.get_by_label("Kind").select_option("purchase")
        activity.get_by_role("button", name="Show").click()
        expect(rows).to_have_count(1)
        expect(activity.locator("[data-activity-csv]")).to_have_attribute(
            "href", "/api/credits/ledger.csv?kind=purchase"
        )
        csv = page.request.get("/api/credits/ledger.csv")
        assert csv.ok
        assert "Credit pack bought" in csv.text()
        activity.scroll_into_view_if_needed()
        page.get_by_label("Kind").select_option("")
        activity.get_by_role("button", name="Show").click()
        expect(rows).to_have_count(3)
        activity.screenshot(path=str(screenshots / f"billing-activity-{device}.png"))
        assert_accessible(page)
        assert not errors, errors
    finally:
        context.close()
