"""The account page's password change and "log out everywhere", with a second browser signed in."""

from __future__ import annotations

import re

from playwright.sync_api import Browser, expect

from tests.browser.conftest import LiveServer
from tests.browser.helpers import DESKTOP, PASSWORD, assert_accessible, sign_up, uncaught_errors, unique_name

NEW_PASSWORD = "a brand new passphrase"


def test_change_the_password_then_log_out_everywhere(browser: Browser, live_server: LiveServer) -> None:
    here = browser.new_context(base_url=live_server.url, viewport=DESKTOP)
    elsewhere = browser.new_context(base_url=live_server.url, viewport=DESKTOP)
    page, other = here.new_page(), elsewhere.new_page()
    errors = uncaught_errors(page)
    username = unique_name("secure")
    try:
        sign_up(page, username)
        other.goto("/login")
        other.get_by_label("Username or email").fill(username)
        other.get_by_label("Password").fill(PASSWORD)
        other.get_by_role("button", name="Log in").click()
        other.wait_for_url("**/chat")

        page.goto("/account")
        assert_accessible(page)
        page.get_by_label("Current password").fill("not my password")
        page.get_by_label("New password").fill(NEW_PASSWORD)
        page.get_by_role("button", name="Change password").click()
        expect(page.locator("#current-password-error")).to_have_text("The current password is wrong.")
        page.get_by_label("New password").fill("short")
        page.get_by_label("Current password").fill(PASSWORD)
        page.get_by_role("button", name="Change password").click()
        expect(page.locator("#new-password-error")).not_to_be_empty()

        page.get_by_label("New password").fill(NEW_PASSWORD)
        page.get_by_role("button", name="Change password").click()
        expect(page.locator("[data-password-done]")).to_be_visible()
        expect(page.get_by_label("Current password")).to_have_value("")

        # The other browser's session has ended; this one goes on.
        other.goto("/account")
        expect(other).to_have_url(re.compile(r"/login\?next=/account$"))
        page.reload()
        expect(page.get_by_role("heading", name="Password and sessions")).to_be_visible()

        # The new password logs the other browser in again; then one click ends both sessions.
        other.get_by_label("Username or email").fill(username)
        other.get_by_label("Password").fill(NEW_PASSWORD)
        other.get_by_role("button", name="Log in").click()
        other.wait_for_url("**/account")
        # Leave the other page idle: its scripts' next call would be answered 401 and
        # redirect it to /login on their own, racing the navigation below.
        other.goto("about:blank")
        page.get_by_role("button", name="Log out everywhere").click()
        page.wait_for_url("**/login")
        for browser_page in (page, other):
            browser_page.goto("/chat")
            expect(browser_page).to_have_url(re.compile(r"/login\?next=/chat$"))
        assert not errors, errors
    finally:
        here.close()
        elsewhere.close()
