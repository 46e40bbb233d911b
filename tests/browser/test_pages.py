"""Pages a visitor sees before signing in: the landing page, the forms and their errors, 404."""

from __future__ import annotations

import re
from urllib.parse import urlencode

from playwright.sync_api import Browser, expect

from tests.browser.conftest import LiveServer
from tests.browser.helpers import DESKTOP, PASSWORD, assert_accessible, sign_up, uncaught_errors, unique_name


def test_landing_shows_plans_and_packs(browser: Browser, live_server: LiveServer) -> None:
    page = browser.new_page(base_url=live_server.url, viewport=DESKTOP)
    errors = uncaught_errors(page)
    try:
        page.goto("/")
        expect(page.locator(".tier")).to_have_count(4)
        expect(page.locator("[data-tier-name=starter]")).to_contain_text("$19")
        expect(page.locator("[data-tier-name=starter]")).to_contain_text("200 credits a month")
        expect(page.locator(".pack")).to_have_count(4)
        popular = page.locator("[data-popular=true]")
        expect(popular).to_have_count(1)
        expect(popular).to_contain_text("250 credits")
        expect(popular).to_contain_text("Popular")
        expect(page.get_by_text("demo mode: no money is taken")).to_be_visible()
        assert_accessible(page)
        page.get_by_role("link", name="Start free: 20 credits a month").click()
        page.wait_for_url("**/register")
        assert not errors, errors
    finally:
        page.close()


def test_forms_show_the_api_errors_next_to_the_fields(browser: Browser, live_server: LiveServer) -> None:
    context = browser.new_context(base_url=live_server.url, viewport=DESKTOP)
    page = context.new_page()
    errors = uncaught_errors(page)
    try:
        page.goto("/register")
        page.get_by_label("Username").fill("a")
        page.get_by_label("Email").fill("someone@example.com")
        page.get_by_label("Password").fill("short")
        page.get_by_role("button", name="Create account").click()
        expect(page.locator("#username-error")).not_to_be_empty()
        expect(page.locator("#password-error")).not_to_be_empty()
        expect(page.get_by_label("Password")).to_have_attribute("aria-invalid", "true")
        expect(page).to_have_url(re.compile(r"/register$"))  # nothing was created
        assert_accessible(page)

        taken = unique_name("taken")
        sign_up(page, taken)
        page.get_by_role("button", name="Log out").click()
        page.wait_for_url(re.compile(r"/$"))

        page.goto("/register")
        page.get_by_label("Username").fill(taken)
        page.get_by_label("Email").fill(f"other-{taken}@example.com")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Create account").click()
        expect(page.locator("[data-form-error]")).to_have_text("That username or email is already registered.")

        page.goto("/login")
        page.get_by_label("Username or email").fill(taken)
        page.get_by_label("Password").fill("not the password")
        page.get_by_role("button", name="Log in").click()
        expect(page.locator("[data-form-error]")).to_have_text("Wrong username, email or password.")
        assert_accessible(page)
        assert not errors, errors
    finally:
        context.close()


def test_unknown_pages_get_the_site_404_and_the_api_keeps_json(browser: Browser, live_server: LiveServer) -> None:
    page = browser.new_page(base_url=live_server.url, viewport=DESKTOP)
    errors = uncaught_errors(page)
    try:
        response = page.goto("/no-such-page")
        assert response is not None
        assert response.status == 404
        expect(page.get_by_role("heading", name="Page not found")).to_be_visible()
        expect(page.get_by_role("link", name="Go to the home page")).to_be_visible()
        assert_accessible(page)

        api = page.request.get("/api/no-such-endpoint", headers={"Accept": "text/html"})
        assert api.status == 404
        assert api.json()["error"] == "not_found"
        assert not errors, errors
    finally:
        page.close()


def test_log_in_with_the_keyboard_alone_and_see_where_the_focus_is(browser: Browser, live_server: LiveServer) -> None:
    context = browser.new_context(base_url=live_server.url, viewport=DESKTOP)
    page = context.new_page()
    errors = uncaught_errors(page)
    try:
        username = unique_name("keys")
        sign_up(page, username)
        page.goto("/logout")
        assert_accessible(page)
        page.get_by_role("main").get_by_role("button", name="Log out").click()
        page.wait_for_url(re.compile(r"/$"))

        page.goto("/login")
        page.keyboard.press("Tab")  # the first stop is the skip link, shown when focused
        expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
        page.get_by_label("Username or email").focus()
        page.keyboard.type(username)
        page.keyboard.press("Tab")
        expect(page.get_by_label("Password")).to_be_focused()
        outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
        assert outline != "none", "the focused field shows where the focus is"
        page.keyboard.type(PASSWORD)
        page.keyboard.press("Enter")
        page.wait_for_url("**/chat")
        expect(page.get_by_label("Message", exact=True)).to_be_visible()
        assert not errors, errors
    finally:
        context.close()


# Each would leave the site if followed as given: browsers drop tabs and newlines from
# URLs and read "\" as "/". Logging in through the form with any of them stays here.
OFF_SITE_NEXT = ["/\t/evil.com", "/\n/evil.com", "/\r/evil.com", "//evil", "/\\evil", "https://evil"]


def test_logging_in_with_an_off_site_next_stays_on_this_site(browser: Browser, live_server: LiveServer) -> None:
    context = browser.new_context(base_url=live_server.url, viewport=DESKTOP)
    page = context.new_page()
    username = unique_name("next")
    try:
        sign_up(page, username)
    finally:
        context.close()
    for target in OFF_SITE_NEXT:
        context = browser.new_context(base_url=live_server.url, viewport=DESKTOP)
        page = context.new_page()
        errors = uncaught_errors(page)
        try:
            page.goto(f"/login?{urlencode({'next': target})}")
            page.get_by_label("Username or email").fill(username)
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Log in").click()
            page.wait_for_url(lambda url: "/login" not in url)
            page.wait_for_load_state()
            assert page.url == f"{live_server.url}/chat", (target, page.url)
            assert not errors, errors
        finally:
            context.close()
