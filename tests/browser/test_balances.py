"""Balances that explain themselves, previews before paying, feedback where the customer looks.

The header's counter splits monthly and purchased credits and stays in view; the plan
cards say what their credits buy and both public and billing pages list every price;
/billing on Free makes no request that answers 403, and an upgrade's features appear
without a reload; the out-of-credits dialog says when credits come back and sells a pack.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Response, expect

from tests.browser.conftest import LiveServer
from tests.browser.helpers import (
    DESKTOP,
    PHONE,
    assert_accessible,
    expect_counter,
    sign_up,
    uncaught_errors,
    unique_name,
)


def watch_refusals(page: Page) -> list[str]:
    """Every response of 400 or more, and every console error, from now on."""
    seen: list[str] = []

    def on_response(response: Response) -> None:
        if response.status >= 400:
            seen.append(f"{response.status} {response.request.method} {response.url}")

    page.on("response", on_response)
    page.on("console", lambda message: seen.append(message.text) if message.type == "error" else None)
    return seen


def test_landing_lists_every_price_and_what_plans_buy(browser: Browser, live_server: LiveServer) -> None:
    page = browser.new_page(base_url=live_server.url, viewport=PHONE)
    try:
        page.goto("/")
        prices = page.locator("[data-price-list]")
        expect(prices.locator("tbody tr")).to_have_count(8)
        expect(prices.locator("[data-action=agent_message]")).to_contain_text("Message to the agent")
        expect(prices.locator("[data-action=create_ec2_instance]")).to_contain_text("Create an EC2 instance")
        expect(prices.locator("[data-action=create_ec2_instance] .num")).to_have_text("5")
        expect(prices).not_to_contain_text("create_ec2_instance")
        expect(page.locator("[data-tier-name=starter] [data-tier-buys]")).to_have_text(
            "That is 200 messages, or 100 lists of your resources, or 33 new servers."
        )
        assert_accessible(page)
    finally:
        page.close()


@pytest.mark.parametrize(("device", "viewport"), [("desktop", DESKTOP), ("phone", PHONE)])
def test_billing_explains_balances_and_upgrades_in_place(
    browser: Browser, live_server: LiveServer, screenshots: Path, device: str, viewport: dict[str, int]
) -> None:
    context = browser.new_context(base_url=live_server.url, viewport=viewport)
    page = context.new_page()
    errors = uncaught_errors(page)
    try:
        sign_up(page, unique_name(f"balance{device}"))
        refusals = watch_refusals(page)
        page.goto("/billing")
        section = page.locator("[data-analytics][data-ready=true]")
        expect(section).to_have_count(1)
        gate = page.locator("[data-analytics-gated]")
        expect(gate).to_have_text("Usage charts come with Starter, Professional and Business.")
        expect(page.locator("[data-price-list] tbody tr")).to_have_count(8)
        expect(page.locator("[data-monthly-reset]")).to_contain_text("until")
        expect(page.locator("[data-purchased-legend]")).to_have_text("0")
        page.wait_for_load_state("networkidle")
        assert refusals == [], "Free's /billing asks nothing it is refused"

        pill = page.locator("[data-credit-counter]")
        expect(pill).to_have_attribute(
            "title", re.compile(r"^20 monthly credits until .+, 0 purchased credits that never expire$")
        )
        if device == "desktop":
            expect(pill.locator("[data-credit-split]")).to_have_text("20 monthly · 0 purchased")

        # Starter: the dialog says what it costs and what happens to the credits, then the charts arrive.
        page.get_by_role("button", name="Upgrade to Starter").click()
        dialog = page.get_by_role("dialog", name="Upgrade to Starter?")
        expect(dialog).to_contain_text("Due now")
        expect(dialog).to_contain_text("$19")
        expect(dialog).to_contain_text("Monthly credits replaced")
        expect(dialog).to_contain_text("20 credits")
        assert_accessible(page)
        dialog.get_by_role("button", name="Upgrade to Starter").click()
        expect(page.locator("[data-tier-name=starter] [data-card-status]")).to_contain_text("Upgraded to Starter")
        expect(gate).to_be_hidden()
        expect(page.locator("[data-chart=customer-daily]")).to_be_visible()
        expect(page.locator("[data-exports-note]")).to_contain_text("Professional")
        expect(pill).to_have_attribute("title", re.compile(r"^200 monthly credits"))

        # Professional would replace Starter's 200 credits: the dialog says so; declining changes nothing.
        page.get_by_role("button", name="Upgrade to Professional").click()
        dialog = page.get_by_role("dialog", name="Upgrade to Professional?")
        expect(dialog).to_contain_text("200 credits")
        expect(dialog).to_contain_text("replaced by Professional")
        dialog.get_by_role("button", name="Cancel").click()
        expect(page.locator("[data-tier-badge]")).to_have_text("Starter plan")

        # The header stays in view at the bottom of a long page.
        page.locator("[data-activity]").scroll_into_view_if_needed()
        page.mouse.wheel(0, 4000)
        box = pill.bounding_box()
        assert box is not None
        assert 0 <= box["y"] < viewport["height"], "the counter stays visible"
        page.screenshot(path=str(screenshots / f"billing-balances-{device}.png"))
        assert [r for r in refusals if "403" in r] == []
        assert not errors, errors
    finally:
        context.close()


def test_out_of_credits_dialog_says_when_credits_return_and_sells_a_pack(
    browser: Browser, live_server: LiveServer
) -> None:
    context = browser.new_context(base_url=live_server.url, viewport=PHONE)
    page = context.new_page()
    errors = uncaught_errors(page)
    try:
        sign_up(page, unique_name("ooc"))
        csrf = next(c["value"] for c in context.cookies() if c["name"] == "csrf_token")
        for _ in range(20):
            assert page.request.post("/api/chat", data={"message": "help"}, headers={"X-CSRF-Token": csrf}).ok
        page.reload()
        expect_counter(page, 0)
        expect(page.locator("[data-credit-counter]")).to_contain_text("0 credits")
        box = page.get_by_label("Message", exact=True)
        box.fill("list my EC2 instances")
        box.press("Enter")
        dialog = page.get_by_role("dialog", name="You are out of credits")
        expect(dialog.locator("[data-ooc-reset]")).to_have_text(
            re.compile(r"^Your 20 monthly credits come back on .+\.$")
        )
        buy = dialog.get_by_role("button", name="Buy 250 credits")
        expect(buy).to_be_focused()
        assert_accessible(page)
        buy.click()
        expect(dialog.locator("[data-ooc-result]")).to_have_text(
            "Done: you now have 250 credits. Send your message again."
        )
        expect_counter(page, 250)
        dialog.get_by_role("button", name="Not now").click()
        expect(box).to_have_value("list my EC2 instances")
        assert not errors, errors
    finally:
        context.close()
