"""The admin dashboard and the customer's usage charts in a real Chromium, on a real server.

The server is the production app on a free loopback port, on a SQLite file seeded
with the business of ``seed.py`` plus ten days of February usage, and a clock fixed
at Feb 20, 2026. Screenshots (light, dark, phone) go to ``test-artifacts/screenshots/``.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import uvicorn
from playwright.sync_api import Browser, Page, expect

from devops_agent import billing
from devops_agent.billing import books
from devops_agent.billing.models import User
from devops_agent.cli import initialize
from devops_agent.config import Settings
from devops_agent.db import Database
from devops_agent.notifications import Notifier
from devops_agent.users import admins
from devops_agent.web.app import create_app
from tests.analytics.seed import seed_business
from tests.browser.helpers import CHROMIUM, DESKTOP, PASSWORD, PHONE, SCREENSHOTS, assert_accessible, uncaught_errors
from tests.web.conftest import fast_passwords

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM} (make browser)"),
]

NOW = datetime(2026, 2, 20, 12, 0, tzinfo=UTC)
DOCS = SCREENSHOTS  # tests write to test-artifacts/; the README's copies in docs/ are refreshed by hand
FEBRUARY_TOOLS = ("get_ec2_instances", "list_s3_buckets", "get_rds_instances", "create_ec2_instance")


async def _prepare(url: str) -> None:
    db = Database(url)
    try:
        await initialize(db)
        ids = await seed_business(db)
        hasher = fast_passwords()
        await admins.create_admin(
            db, username="boss", email="boss@example.com", password=PASSWORD, now=NOW, passwords=hasher
        )
        async with db.transaction() as s:
            for user_id in (ids.alice, ids.bob):
                user = await s.get(User, user_id)
                assert user is not None
                user.password_hash = await hasher.hash(PASSWORD)
        # Ten days of February work by alice and bob, so the 30-day charts have a shape.
        for day in range(10):
            when = datetime(2026, 2, 10 + day, 9, 0, tzinfo=UTC)
            async with db.transaction() as s:
                for n in range(1 + day % 4):
                    await billing.charge(s, user_id=ids.alice, amount=1, action_type="agent_message", now=when)
                    tool = FEBRUARY_TOOLS[(day + n) % len(FEBRUARY_TOOLS)]
                    cost = 5 if tool.startswith("create") else 1
                    await billing.charge(
                        s, user_id=ids.alice, amount=cost, action_type="tool_use", tool_name=tool, now=when
                    )
                await billing.charge(
                    s, user_id=ids.bob, amount=2, action_type="tool_use", tool_name="get_ec2_instances", now=when
                )
        # dave (back on Free) spends down to 3: his low-credit email lands in the outbox (no SMTP_URL).
        async with db.transaction() as s:
            await billing.charge(
                s, user_id=ids.dave, amount=17, action_type="agent_message", now=NOW - timedelta(hours=1)
            )
        notifier = Notifier(db, smtp_url=None, sender="billing@devops-agent.test", base_url="http://agent.test")
        await notifier.after_balance_change(user_id=ids.dave, now=NOW - timedelta(hours=1))
        await notifier.wait_idle()
        # The nightly books audit ran (the dashboard shows its result and time).
        report = await books.check_books(db, clock=lambda: NOW - timedelta(minutes=30))
        async with db.transaction() as s:
            await books.record_run(s, report)
    finally:
        await db.dispose()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("admin-browser")
    url = f"sqlite:///{workdir / 'app.db'}"
    # Seed in a thread of its own: this module's tests are synchronous (Playwright), the suite's loop is not ours.
    seeding = threading.Thread(target=lambda: asyncio.run(_prepare(url)), name="seed-admin-browser")
    seeding.start()
    seeding.join()
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=url,
        secret_key="admin-browser-secret",
        log_dir=workdir / "logs",
        anthropic_api_key=None,
        stripe_secret_key=None,
        smtp_url=None,
    )
    app = create_app(settings, clock=lambda: NOW)
    app.state.passwords = fast_passwords()
    port = _free_port()
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=uv.run, name="admin-browser-server", daemon=True)
    thread.start()
    while not uv.started:  # an event to wait for, not a sleep: uvicorn says when it serves
        thread.join(0.05)
        if not thread.is_alive():
            pytest.fail("the app server did not start")
    yield f"http://127.0.0.1:{port}"
    uv.should_exit = True
    thread.join(10)


def log_in(page: Page, username: str, target: str) -> None:
    page.goto(f"/login?next={target}")
    page.get_by_label("Username or email").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"**{target}")


def no_sideways_scroll(page: Page) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"))


def test_admin_dashboard_renders_the_figures_and_its_tools_work(browser: Browser, server: str) -> None:
    DOCS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(base_url=server, viewport=DESKTOP, color_scheme="light")
    page = context.new_page()
    errors = uncaught_errors(page)
    try:
        log_in(page, "boss", "/admin")
        expect(page.locator("body[data-admin-ready=true]")).to_have_count(1)
        expect(page.locator("[data-kpi-mrr]")).to_contain_text("$98.00")
        expect(page.locator("[data-kpi-packs]")).to_contain_text("$55.00")
        expect(page.locator("[data-kpi-churn]")).to_contain_text("(1 of 4)")
        for name in ("pack-revenue", "subscribers", "daily", "tools"):
            expect(page.locator(f"[data-chart={name}][data-ready=true] canvas")).to_be_visible()
        expect(page.locator("[data-top-user-rows] tr").first).to_contain_text("alice")
        expect(page.locator("[data-top-tool-rows]")).to_contain_text("get_ec2_instances")
        expect(page.locator("[data-email-rows]")).to_contain_text("Only 3 DevOps Agent credits left")
        expect(page.locator("[data-smtp-note]")).to_contain_text("SMTP_URL is not set")
        expect(page.locator("[data-books-status]")).to_contain_text("the books hold")
        expect(page.locator("[data-books-status]")).to_contain_text("Last audit")
        assert_accessible(page)
        page.screenshot(path=str(DOCS / "admin.png"), full_page=True)

        page.get_by_role("button", name="Conservative: 100 users").click()
        expect(page.locator("[data-projection-result]")).to_have_text("Expected MRR: $800.00 a month (100 users)")
        page.get_by_role("button", name="growth: 1,000 users").click()
        expect(page.locator("[data-projection-result]")).to_contain_text("$14,100.00")
        expect(page.locator("[data-projection-by-tier]")).to_contain_text("Professional: $6,320.00")

        page.get_by_label("Username, email or id").fill("bob")
        page.get_by_role("button", name="Find").click()
        page.get_by_role("button", name="Open bob").click()
        expect(page.locator("[data-user-plan]")).to_have_text("Professional")
        page.get_by_label("Credits (+ give, − take)").fill("25")
        page.get_by_label("Reason (kept in the ledger and the audit log)").fill("sorry for the outage")
        page.get_by_role("button", name="Apply adjustment").click()
        expect(page.locator("[data-admin-status]")).to_contain_text("Adjusted bob")
        expect(page.locator("[data-ledger-rows] tr").first).to_contain_text("sorry for the outage")
        expect(page.locator("[data-audit-rows] tr").first).to_contain_text("adjust_credits")

        page.get_by_label("Reason", exact=True).fill("card fraud check")
        page.get_by_role("button", name="Suspend").click()
        expect(page.locator("[data-user-state]")).to_have_text("suspended")
        page.get_by_label("Reason", exact=True).fill("cleared")
        page.get_by_role("button", name="Restore").click()
        expect(page.locator("[data-user-state]")).to_have_text("active")
        assert errors == []
    finally:
        context.close()


@pytest.mark.parametrize(("name", "viewport", "scheme"), [("dark", DESKTOP, "dark"), ("phone", PHONE, "dark")])
def test_admin_dashboard_reads_in_dark_and_on_a_phone(
    browser: Browser, server: str, name: str, viewport: dict[str, int], scheme: str
) -> None:
    context = browser.new_context(base_url=server, viewport=viewport, color_scheme=scheme)  # type: ignore[arg-type]
    page = context.new_page()
    try:
        log_in(page, "boss", "/admin")
        expect(page.locator("[data-chart=daily][data-ready=true]")).to_have_count(1)
        assert no_sideways_scroll(page)
        background = page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(16, 21, 28)"  # app.css's dark --bg: the charts take the same variables
        page.screenshot(path=str(DOCS / f"admin-{name}.png"), full_page=name == "dark")
    finally:
        context.close()


def test_customer_charts_on_billing_and_admin_page_refused(browser: Browser, server: str) -> None:
    context = browser.new_context(base_url=server, viewport=PHONE, color_scheme="light")
    page = context.new_page()
    errors = uncaught_errors(page)
    try:
        log_in(page, "alice", "/billing")
        section = page.locator("[data-analytics][data-ready=true]")
        expect(section).to_have_count(1)
        expect(page.locator("[data-chart=customer-daily][data-ready=true] canvas")).to_be_visible()
        expect(page.locator("[data-customer-tool-rows]")).to_contain_text("Message to the agent")
        expect(page.locator("[data-customer-tool-rows]")).not_to_contain_text("agent_message")
        expect(page.locator("[data-analytics-window]")).to_contain_text("credits")
        # Starter has usage analytics but not the exports: the page says which plans do.
        expect(page.locator("[data-export-csv]")).to_be_hidden()
        expect(page.locator("[data-exports-note]")).to_contain_text("Professional")
        expect(page.locator("[data-low-credit-emails]")).to_be_checked()
        assert no_sideways_scroll(page)
        section.scroll_into_view_if_needed()
        section.screenshot(path=str(DOCS / "admin-customer-usage-phone.png"))
        assert_accessible(page)
        assert errors == []

        page.goto("/admin")
        expect(page.get_by_role("heading", name="Administrators only")).to_be_visible()
    finally:
        context.close()
