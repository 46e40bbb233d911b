"""Promotional grants in the browser: an admin gives credits from the user lookup, the customer's
/billing says when they expire and lists the grant in the activity; an admin gives a team's
pool credits from the organizations panel, and the team's page says when they expire.

A server of its own (a fresh SQLite file), so the admin made here is nobody else's. The
contexts read dates in en-US and UTC, so "Dec 31, 2026" is what every reader sees.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from devops_agent.db import Database
from devops_agent.users import admins
from tests.browser.conftest import LiveServer, serve
from tests.browser.helpers import DESKTOP, assert_accessible, sign_up, uncaught_errors, unique_name


@pytest.fixture(scope="module")
def grants_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with serve(tmp_path_factory.mktemp("grants-server")) as server:
        yield server


def promote(server: LiveServer, username: str) -> None:
    """Make ``username`` an admin, as ``devops-agent create-admin`` would (in a thread: Playwright owns this loop)."""

    async def run() -> None:
        db = Database(server.settings.database_url)
        try:
            assert await admins.promote(db, username=username, now=datetime.now(UTC)) is not None
        finally:
            await db.dispose()

    worker = threading.Thread(target=lambda: asyncio.run(run()), name="promote-admin")
    worker.start()
    worker.join()


def new_context(browser: Browser, server: LiveServer) -> BrowserContext:
    return browser.new_context(base_url=server.url, viewport=DESKTOP, locale="en-US", timezone_id="UTC")


def us_date(day: date) -> str:
    return f"{day:%b} {day.day}, {day.year}"


def open_user(page: Page, username: str) -> None:
    page.goto("/admin")
    expect(page.locator("body")).to_have_attribute("data-admin-ready", "true")
    page.get_by_label("Username, email or id").fill(username)
    page.get_by_role("button", name="Find").click()
    page.get_by_role("button", name=f"Open {username}").click()
    expect(page.locator("[data-user-title]")).to_contain_text(username)


def test_an_admin_grants_credits_and_the_customer_sees_when_they_expire(
    browser: Browser, grants_server: LiveServer, screenshots: Path
) -> None:
    customer_name, admin_name = unique_name("grantee"), unique_name("granter")
    expires = (datetime.now(UTC) + timedelta(days=30)).date()
    customer_context, admin_context = new_context(browser, grants_server), new_context(browser, grants_server)
    customer, admin = customer_context.new_page(), admin_context.new_page()
    customer_errors, admin_errors = uncaught_errors(customer), uncaught_errors(admin)
    try:
        sign_up(customer, customer_name)
        sign_up(admin, admin_name)
        promote(grants_server, admin_name)

        open_user(admin, customer_name)
        form = admin.locator("[data-grant-form]")
        # A refused grant says why next to the field, and gives nothing.
        form.get_by_label("Credits to give").fill("40")
        form.get_by_role("button", name="Grant credits").click()
        expect(form.locator("#grant-reason-error")).not_to_be_empty()
        expect(admin.locator("[data-user-grant-rows] tr")).to_have_count(1)  # the plan's grant only

        form.get_by_label("Credits to give").fill("40")
        form.get_by_label("Expires on").fill(expires.isoformat())
        form.get_by_label("Reason").fill("Conference booth")
        form.get_by_role("button", name="Grant credits").click()
        said = f"Granted 40 promotional credits to {customer_name}, expiring on {us_date(expires)}."
        expect(form.locator("[data-grant-result]")).to_have_text(said)
        grants = admin.locator("[data-user-grant-rows] tr")
        expect(grants).to_have_count(2)
        expect(admin.get_by_role("row", name=f"promotional 40 40 {us_date(expires)}")).to_have_count(1)
        expect(admin.locator("[data-user-promotional]")).to_have_text("40")
        expect(admin.locator("[data-user-balance]")).to_have_text("60")
        expect(admin.locator("[data-audit-rows] tr").first).to_contain_text("grant_credits")
        expect(admin.locator("[data-audit-rows] tr").first).to_contain_text("Conference booth")
        admin.screenshot(path=str(screenshots / "admin-grant.png"), full_page=True)

        customer.goto("/billing")
        expect(customer.locator("[data-balance-total]")).to_have_text("60")
        expect(customer.locator("[data-promotional]")).to_have_text("40")
        # The meter draws them beside the month's credits: 40 of the 60 in all.
        expect(customer.locator("[data-promotional-legend]")).to_have_text("40")
        share = customer.locator("[data-meter-promotional]").evaluate(
            "bar => bar.getBoundingClientRect().width / bar.parentElement.getBoundingClientRect().width"
        )
        assert abs(share - 40 / 60) < 0.02, share
        meter = customer.locator("[data-meter]")
        expect(meter).to_have_attribute("aria-valuetext", re.compile("40 promotional credits"))
        expect(customer.locator("[data-expiring-list]")).to_contain_text(
            f"40 promotional credits expire on {us_date(expires)}"
        )
        granted = customer.locator('[data-activity-rows] tr[data-kind="grant"]')
        expect(granted).to_contain_text("Promotional credits")
        expect(granted).to_contain_text("Conference booth")
        expect(granted).to_contain_text("+40")
        expect(customer.locator("[data-activity-rows] tr").first).to_contain_text("60")  # the balance after
        assert_accessible(customer)
        customer.screenshot(path=str(screenshots / "billing-expiring-credits.png"), full_page=True)
        assert (customer_errors, admin_errors) == ([], [])
    finally:
        customer_context.close()
        admin_context.close()


def test_an_admin_grants_a_team_credits_and_the_team_sees_when_they_expire(
    browser: Browser, grants_server: LiveServer, screenshots: Path
) -> None:
    owner_name, admin_name = unique_name("poolowner"), unique_name("poolgranter")
    expires = datetime.now(UTC) + timedelta(days=20)
    owner_context, admin_context = new_context(browser, grants_server), new_context(browser, grants_server)
    owner, admin = owner_context.new_page(), admin_context.new_page()
    errors, admin_errors = uncaught_errors(owner), uncaught_errors(admin)
    try:
        sign_up(owner, owner_name)
        sign_up(admin, admin_name)
        promote(grants_server, admin_name)
        csrf = {"X-CSRF-Token": next(c["value"] for c in owner_context.cookies() if c["name"] == "csrf_token")}
        tiers = owner.request.get("/api/subscription/tiers").json()["tiers"]
        pro = next(t for t in tiers if t["name"] == "professional")
        assert owner.request.post("/api/subscription/upgrade", data={"tier_id": pro["id"]}, headers=csrf).ok
        org = owner.request.post("/api/orgs", data={"name": "Launch team"}, headers=csrf).json()["organization"]

        admin.goto("/admin")
        form = admin.locator("[data-org-grant-form]")
        form.get_by_label("Team").select_option(label=f"Launch team ({owner_name})")
        form.get_by_label("Credits to give").fill("25")
        form.get_by_label("Expires on").fill(expires.date().isoformat())
        form.get_by_label("Reason").fill("Launch week")
        form.get_by_role("button", name="Grant credits to the team").click()
        said = f"Granted 25 promotional credits to Launch team ({owner_name}), expiring on {us_date(expires.date())}."
        expect(form.locator("[data-org-grant-result]")).to_have_text(said)
        pool_cell = admin.get_by_role("row", name=f"Launch team {owner_name}").locator("td").nth(4)
        expect(pool_cell).to_have_text("45")  # the Free plan's 20 and the 25 given
        assert_accessible(admin)
        assert admin_errors == []

        owner.goto(f"/orgs/{org['id']}")
        expiring = owner.locator("[data-pool-expiring-list]")
        expect(expiring).to_contain_text(f"25 promotional credits expire on {us_date(expires.date())}")
        expect(owner.get_by_role("heading", name="Coming up")).to_be_visible()
        assert_accessible(owner)
        owner.screenshot(path=str(screenshots / "team-pool-expiring-credits.png"), full_page=True)
        assert errors == []
    finally:
        owner_context.close()
        admin_context.close()
