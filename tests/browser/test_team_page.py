"""The team page: cards spaced apart, empty states said in sentences, a member table that fits a phone."""

from __future__ import annotations

import pytest
from playwright.sync_api import Browser, expect

from tests.browser.conftest import LiveServer
from tests.browser.helpers import DESKTOP, PHONE, assert_accessible, sign_up, uncaught_errors, unique_name


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_a_new_team_reads_well(browser: Browser, live_server: LiveServer, viewport: dict[str, int]) -> None:
    context = browser.new_context(base_url=live_server.url, viewport=viewport)
    page = context.new_page()
    errors = uncaught_errors(page)
    try:
        sign_up(page, unique_name("teamowner"))
        csrf = {"X-CSRF-Token": next(c["value"] for c in context.cookies() if c["name"] == "csrf_token")}
        tiers = page.request.get("/api/subscription/tiers").json()["tiers"]
        pro = next(t for t in tiers if t["name"] == "professional")
        assert page.request.post("/api/subscription/upgrade", data={"tier_id": pro["id"]}, headers=csrf).ok
        org = page.request.post("/api/orgs", data={"name": "Ops"}, headers=csrf).json()["organization"]
        page.goto(f"/orgs/{org['id']}")

        expect(page.locator("[data-members-body] tr")).to_have_count(1)
        expect(page.get_by_text("No pending invitations.")).to_be_visible()
        expect(page.get_by_label("Transfer ownership to")).to_be_hidden()
        expect(page.get_by_text("No other member can take over the team yet: invite someone first.")).to_be_visible()
        expect(page.locator("[data-usage-body]")).to_contain_text("None yet")

        # Every card stands apart from the one above it.
        gaps = page.locator("[data-org] > section:visible").evaluate_all(
            """cards => cards.slice(1).map((card, i) =>
                 card.getBoundingClientRect().top - cards[i].getBoundingClientRect().bottom)"""
        )
        assert gaps
        assert min(gaps) >= 16, gaps
        fits = page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        assert fits, "the member table fits the screen"

        page.get_by_label("Email").fill("new.person@example.com")
        page.get_by_role("button", name="Create invitation").click()
        expect(page.locator("[data-invitations] li")).to_have_count(1)
        expect(page.get_by_text("No pending invitations.")).to_be_hidden()
        assert_accessible(page)
        assert not errors, errors
    finally:
        context.close()
