"""The chat as a conversation: the message shows at once, costs survive a reload,
/chat reopens the latest conversation, and conversations can be renamed and deleted."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

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


@pytest.fixture
def live_server(auto_approve_server: LiveServer) -> LiveServer:
    """Creates run at once here: these tests are about what a reply cost, not approval."""
    return auto_approve_server


# Records, the moment the typing indicator appears, whether the sent message was already shown.
WATCH_TYPING = """
window.__typing = null;
new MutationObserver(() => {
  if (window.__typing === null && document.querySelector('[data-typing]')) {
    const bubbles = [...document.querySelectorAll('.message-user')].map((b) => b.textContent);
    window.__typing = { userShown: bubbles.some((t) => t.includes(window.__sent)) };
  }
}).observe(document.querySelector('[data-messages]'), { childList: true, subtree: true });
"""


def send(page: Page, text: str) -> dict[str, object]:
    box = page.get_by_label("Message", exact=True)
    box.fill(text)
    page.evaluate("text => { window.__sent = text; }", text)
    with page.expect_response(lambda r: r.url.endswith("/api/chat") and r.request.method == "POST") as answer:
        page.get_by_role("button", name="Send").click()
    assert answer.value.status == 200
    reply: dict[str, object] = answer.value.json()
    return reply


@pytest.mark.parametrize(("device", "viewport"), [("desktop", DESKTOP), ("phone", PHONE)])
def test_costs_survive_a_reload_and_conversations_are_managed(
    browser: Browser, live_server: LiveServer, screenshots: Path, device: str, viewport: dict[str, int]
) -> None:
    context = browser.new_context(base_url=live_server.url, viewport=viewport)
    page = context.new_page()
    errors = uncaught_errors(page)
    try:
        sign_up(page, unique_name(f"costs{device}"))
        page.evaluate(WATCH_TYPING)
        send(page, "create a t3.micro instance named web-1")
        assert page.evaluate("window.__typing") == {"userShown": True}, "typing indicator with the message shown"
        expect(page.locator("[data-typing]")).to_have_count(0)

        last = page.locator(".message-assistant").last
        expect(last.locator("[data-reply-meta]")).to_have_text("Cost 6 credits · 14 credits left")
        expect(last.locator(".tool-call")).to_have_text(["Create an EC2 instance · 5 credits"])
        expect(last.locator(".message-author")).to_have_text("DevOps Agent · Offline agent")
        expect(last).not_to_contain_text("[Offline agent]")
        expect(last).not_to_contain_text("create_ec2_instance")
        live = last.inner_text()
        expect_counter(page, 14)

        send(page, "list my EC2 instances")
        expect(page.locator(".message-assistant").last.locator("[data-reply-meta]")).to_have_text(
            "Cost 2 credits · 12 credits left"
        )
        send(page, "hello")
        expect(page.locator(".message-assistant").last.locator("[data-reply-meta]")).to_have_text(
            "Cost 1 credit · 11 credits left"
        )
        page.screenshot(path=str(screenshots / f"chat-costs-{device}.png"))

        # A fresh visit of /chat opens the latest conversation, drawn the same as it was live.
        page.goto("/chat")
        expect(page.locator(".message-assistant")).to_have_count(3)
        assert page.locator(".message-assistant").first.inner_text() == live
        expect(page.locator("[data-conversation-list] a[aria-current=true]")).to_have_count(1)
        assert_accessible(page)

        page.get_by_role("button", name="Rename").click()
        page.get_by_label("Conversation name").fill("")
        page.get_by_role("button", name="Save").click()
        expect(page.locator("#conversation-title-error")).to_have_text("Give the conversation a name.")
        page.get_by_label("Conversation name").fill("Web servers")
        page.get_by_role("button", name="Save").click()
        expect(page.locator("[data-chat-title]")).to_have_text("Web servers")
        expect(page.locator("[data-conversation-list]")).to_contain_text("Web servers")

        page.get_by_role("button", name="Delete").click()
        dialog = page.get_by_role("dialog", name="Delete this conversation?")
        expect(dialog).to_contain_text("What it cost stays")
        assert_accessible(page)
        dialog.get_by_role("button", name="Delete conversation").click()
        expect(page.locator("[data-conversations-empty]")).to_be_visible()
        expect(page.locator(".message")).to_have_count(0)
        expect_counter(page, 11)
        expect(page).to_have_url(re.compile(r"/chat$"))
        assert not errors, errors
    finally:
        context.close()
