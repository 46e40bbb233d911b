"""The admin page's revenue recognition panel in a real Chromium, on a real server.

The server is the production app on a free loopback port, on a SQLite file where the
worked month (``tests.billing.recognition_story``) was played, with a clock fixed at
Apr 20, 2026: the panel opens on April, and the admin picks March.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from playwright.sync_api import Browser, expect

from devops_agent.cli import initialize
from devops_agent.config import Settings
from devops_agent.db import Database
from devops_agent.users import admins
from devops_agent.web.app import create_app
from tests.analytics.test_admin_browser import log_in, no_sideways_scroll
from tests.billing.recognition_story import at, expiring_packs, play_worked_month
from tests.browser.helpers import CHROMIUM, DESKTOP, PASSWORD, PHONE, SCREENSHOTS, assert_accessible, uncaught_errors
from tests.web.conftest import fast_passwords

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM} (make browser)"),
]

NOW = at(4, 20, 12)


async def _prepare(url: str, workdir: Path) -> None:
    db = Database(url)
    try:
        await initialize(db)
        with expiring_packs(workdir):
            await play_worked_month(db)
        await admins.create_admin(
            db, username="boss", email="boss@example.com", password=PASSWORD, now=NOW, passwords=fast_passwords()
        )
    finally:
        await db.dispose()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("recognition-browser")
    url = f"sqlite:///{workdir / 'app.db'}"
    # Seeded in a thread of its own: Playwright's sync API owns this thread's event loop.
    seeding = threading.Thread(target=lambda: asyncio.run(_prepare(url, workdir)), name="seed-recognition")
    seeding.start()
    seeding.join()
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=url,
        secret_key="recognition-browser-secret",
        log_dir=workdir / "logs",
        anthropic_api_key=None,
        stripe_secret_key=None,
        smtp_url=None,
    )
    app = create_app(settings, clock=lambda: NOW)
    app.state.passwords = fast_passwords()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=uv.run, name="recognition-browser-server", daemon=True)
    thread.start()
    while not uv.started:  # uvicorn says when it serves
        thread.join(0.05)
        if not thread.is_alive():
            pytest.fail("the app server did not start")
    yield f"http://127.0.0.1:{port}"
    uv.should_exit = True
    thread.join(10)


def test_the_panel_shows_the_months_roll_forward_and_its_csv(browser: Browser, server: str) -> None:
    context = browser.new_context(base_url=server, viewport=DESKTOP, color_scheme="light")
    page = context.new_page()
    errors = uncaught_errors(page)
    try:
        log_in(page, "boss", "/admin")
        panel = page.locator("[data-recognition][data-ready=true]")
        expect(panel).to_have_count(1)
        month = page.get_by_label("Month (UTC)")
        expect(month).to_have_value("2026-04")  # the server's current month
        expect(panel.locator("[data-figure=deferred_revenue_start]")).to_have_text("$34.40")

        month.fill("2026-03")
        expect(page.locator("[data-recognition-label]")).to_have_text("(2026-03)")
        rows = panel.locator("[data-rollforward] tbody tr")
        expect(rows).to_have_text(
            [
                "Deferred revenue at the start $20.83",
                "+ Pack sales $46.00",
                "− Recognized (credits used) $8.60",
                "− Breakage (credits expired) $3.00",
                "− Refunds (credits taken back) $20.83",
                "= Deferred revenue at the end $34.40",
            ],
            use_inner_text=True,
        )
        expect(panel.locator("[data-figure=plan_revenue]")).to_contain_text("$69.27")

        link = page.get_by_role("link", name="CSV, 2025-04 to 2026-03")
        expect(link).to_have_attribute("href", "/api/admin/revenue/recognition.csv?from=2025-04&to=2026-03")
        with page.expect_download() as download:
            link.click()
        assert download.value.suggested_filename == "revenue-recognition-2025-04-to-2026-03.csv"
        lines = Path(download.value.path()).read_text().splitlines()
        assert lines[-1] == "2026-03,usd,69.27,46.00,8.60,3.00,20.83,20.83,34.40"

        assert_accessible(page)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        panel.screenshot(path=str(SCREENSHOTS / "admin-revenue-recognition.png"))
        assert errors == []
    finally:
        context.close()


def test_the_panel_reads_on_a_phone(browser: Browser, server: str) -> None:
    context = browser.new_context(base_url=server, viewport=PHONE, color_scheme="dark")
    page = context.new_page()
    try:
        log_in(page, "boss", "/admin")
        panel = page.locator("[data-recognition][data-ready=true]")
        expect(panel).to_have_count(1)
        assert no_sideways_scroll(page)
        panel.screenshot(path=str(SCREENSHOTS / "admin-revenue-recognition-phone.png"))
    finally:
        context.close()
