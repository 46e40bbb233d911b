"""Forms speak plainly: the sign-up form's errors are sentences next to their fields."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Browser, expect

from tests.browser.conftest import LiveServer
from tests.browser.helpers import DESKTOP, PHONE, assert_accessible, uncaught_errors

MACHINE_WORDING = re.compile(r"String should|pattern|Input should|Field required|\^\[")


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_sign_up_errors_read_as_sentences(browser: Browser, live_server: LiveServer, viewport: dict[str, int]) -> None:
    page = browser.new_page(base_url=live_server.url, viewport=viewport)
    errors = uncaught_errors(page)
    try:
        page.goto("/register")
        page.get_by_label("Username").fill("a!")
        page.get_by_label("Email").fill("not-an-email")
        page.get_by_label("Password").fill("short")
        page.get_by_role("button", name="Create account").click()
        expect(page.locator("#username-error")).to_have_text("Use 3 to 32 letters, digits, dot, dash or underscore.")
        expect(page.locator("#email-error")).to_have_text("Enter an email address like name@example.com.")
        expect(page.locator("#password-error")).to_have_text("Use at least 8 characters.")
        for slot in ("#username-error", "#email-error", "#password-error", "[data-form-error]"):
            text = page.locator(slot).inner_text()
            assert not MACHINE_WORDING.search(text), text
        assert_accessible(page)
        assert not errors, errors
    finally:
        page.close()
