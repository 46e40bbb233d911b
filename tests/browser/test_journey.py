"""A customer's first month in a real browser, on a desktop and on a phone.

Sign up -> chat until the low-credit warning -> the out-of-credits modal -> billing ->
buy a pack -> the counter updates without a reload -> upgrade -> the badge and the
progress bar change. Every number the page shows is checked against what the JSON
API answered, and each page passes the axe-core check on the way.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, Response, expect

from tests.browser.conftest import LiveServer
from tests.browser.helpers import (
    DESKTOP,
    PASSWORD,
    PHONE,
    assert_accessible,
    expect_counter,
    sign_up,
    uncaught_errors,
    unique_name,
)

LOW_CREDITS = 5
TOOL_LABELS = {"get_ec2_instances": "List EC2 instances", "create_ec2_instance": "Create an EC2 instance"}
OUT_OF_CREDITS = "You have run out of credits. Please upgrade your plan or purchase more credits."


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def send(page: Page, text: str) -> Response:
    """Type a message and press Enter (the keyboard path); return the API's answer."""
    box = page.get_by_label("Message", exact=True)
    box.fill(text)
    with page.expect_response(lambda r: r.url.endswith("/api/chat") and r.request.method == "POST") as answer:
        box.press("Enter")
    return answer.value


def expect_reply_shown(page: Page, reply: dict[str, Any]) -> None:
    """The last reply shows its cost, the balance after it, and its tool calls with their cost."""
    last = page.locator(".message-assistant").last
    expect(last.locator("[data-reply-meta]")).to_have_text(
        f"Cost {plural(reply['credits_used'], 'credit')} · {plural(reply['credits_remaining'], 'credit')} left"
    )
    chips = last.locator(".tool-call")
    expect(chips).to_have_count(len(reply["tool_calls"]))
    for chip, call in zip(chips.all(), reply["tool_calls"], strict=True):
        expect(chip).to_contain_text(f"{TOOL_LABELS[call['tool']]} · {plural(call['credits_used'], 'credit')}")
    expect_counter(page, reply["credits_remaining"])


# Cloud chores that spend the 20 free credits to 4: each message costs 1 and its tools
# their catalog price (listing 1, creating an instance 5, charged when its card is
# approved). EC2 only: each sandboxed AWS service costs seconds to start on first use.
CHORES = [
    "list my EC2 instances",
    "create a t3.micro instance named web-1",
    "create a t3.micro instance named web-2",
    "list my EC2 instances",
]


def approve_last_action(page: Page, proposal: dict[str, Any]) -> dict[str, Any]:
    """A create waits on its card: nothing charged until Approve, then its reply shows what it cost."""
    [action] = proposal["pending_actions"]
    card = page.locator(f"[data-action-id='{action['id']}']")
    expect(card).to_contain_text(f"{action['tool']} (name {action['input']['name']}")
    expect(card).to_contain_text(f"{plural(action['credits'], 'credit')} when approved")
    with page.expect_response(lambda r: r.url.endswith(f"/api/chat/actions/{action['id']}/approve")) as answer:
        card.get_by_role("button", name="Approve").click()
    assert answer.value.status == 200
    reply: dict[str, Any] = answer.value.json()
    expect(card.locator("[data-action-status]")).to_have_text("Approved")
    expect(card.get_by_role("button", name="Approve")).to_be_disabled()
    assert [(t["tool"], t["success"]) for t in reply["tool_calls"]] == [(action["tool"], True)]
    expect_reply_shown(page, reply)
    return reply


def chat_until_out_of_credits(page: Page, screenshot: Path) -> None:
    """Chat on 20 free credits: the warning appears below 5, then a 402 opens the modal."""
    warning = page.locator("[data-low-credits]")
    replies = []
    for chore in CHORES:
        expect(warning).to_be_hidden()
        answer = send(page, chore)
        assert answer.status == 200
        reply = answer.json()
        expect_reply_shown(page, reply)
        if reply["pending_actions"]:
            reply = approve_last_action(page, reply)
        replies.append(reply)
        if reply["credits_remaining"] < LOW_CREDITS:
            break
    assert any(r["tool_calls"] for r in replies), "the offline agent ran cloud tools"
    assert reply["credits_remaining"] < LOW_CREDITS, f"the chores left {reply['credits_remaining']} credits"
    assert reply["low_credits"] is True
    expect(warning).to_be_visible()
    expect(warning).to_contain_text(f"Only {reply['credits_remaining']} credits left")
    page.screenshot(path=str(screenshot))

    status = 200
    for _ in range(LOW_CREDITS + 1):
        answer = send(page, "help")
        status = answer.status
        if status == 402:
            break
        expect_reply_shown(page, answer.json())
    assert status == 402
    dialog = page.get_by_role("dialog", name="You are out of credits")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text(OUT_OF_CREDITS)
    expect(dialog).to_contain_text("Free")
    expect_counter(page, 0)
    expect(page.get_by_label("Message", exact=True)).to_have_value("help")  # kept to send again later


def buy_and_upgrade(page: Page, screenshot: Path) -> None:
    """On /billing with 0 credits: buy the popular pack, then upgrade, all without a reload."""
    expect(page.locator("[data-tier-badge]")).to_have_text("Free plan")
    expect(page.locator("[data-usage-line]")).to_have_text("Used 20 of 20 this month")
    expect(page.locator("[data-tier-name=free]")).to_have_attribute("data-current", "true")
    expect(page.locator("[data-demo-note]")).to_contain_text("no money is taken")
    expect(page.locator("[data-popular=true]")).to_contain_text("250 credits")
    page.evaluate("window.__sameDocument = true")

    buy = page.get_by_role("button", name="Buy 250 credits for $20")
    buy.click()
    confirm = page.get_by_role("dialog", name="Buy 250 credits?")
    expect(confirm).to_contain_text("Your balance after")
    expect(confirm).to_contain_text("250 credits")
    confirm.get_by_role("button", name="Buy for $20").click()
    # Said next to the button that was pressed, not at the top of the page.
    expect(page.locator("[data-popular=true] [data-card-status]")).to_have_text(
        "Added 250 credits. You now have 250 credits."
    )
    expect_counter(page, 250)
    expect(page.locator("[data-balance-total]")).to_have_text("250")
    expect(page.locator("[data-purchased]")).to_have_text("250")
    expect(page.locator("[data-monthly-left]")).to_have_text("0")

    page.get_by_role("button", name="Upgrade to Starter").click()
    confirm = page.get_by_role("dialog", name="Upgrade to Starter?")
    expect(confirm).to_contain_text("$19")
    expect(confirm).to_contain_text("450 credits")
    confirm.get_by_role("button", name="Upgrade to Starter").click()
    expect(page.locator("[data-tier-badge]")).to_have_text("Starter plan")
    expect(page.locator("[data-tier-name=starter]")).to_have_attribute("data-current", "true")
    expect(page.locator("[data-tier-name=starter] [data-card-status]")).to_contain_text("Upgraded to Starter")
    expect(page.locator("[data-tier-name=free]")).to_have_attribute("data-current", "false")
    meter = page.locator("[data-meter]")
    # The 20 Free credits used today still count: a plan change is not a new month.
    expect(meter).to_have_attribute("aria-valuemax", "220")
    expect(meter).to_have_attribute("aria-valuenow", "20")
    expect(page.locator("[data-usage-line]")).to_have_text("Used 20 of 220 this month")
    expect(page.locator("[data-monthly-left]")).to_have_text("200")
    expect(page.locator("[data-purchased]")).to_have_text("250")
    expect_counter(page, 450)
    expect(page.get_by_role("button", name="Cancel plan")).to_be_visible()
    expect(page.get_by_role("button", name="Upgrade to Professional")).to_be_visible()
    assert page.evaluate("window.__sameDocument === true"), "the page was reloaded"
    # The picture for the README: the page as the new plan shows it from the start.
    page.reload(wait_until="networkidle")
    expect(page.locator("[data-tier-badge]")).to_have_text("Starter plan")
    page.screenshot(path=str(screenshot), full_page=page.viewport_size == DESKTOP)


@pytest.mark.parametrize(("device", "viewport"), [("desktop", DESKTOP), ("phone", PHONE)])
def test_sign_up_chat_run_out_buy_and_upgrade(
    browser: Browser, live_server: LiveServer, screenshots: Path, device: str, viewport: dict[str, int]
) -> None:
    context = browser.new_context(base_url=live_server.url, viewport=viewport)
    page = context.new_page()
    errors = uncaught_errors(page)
    try:
        sign_up(page, unique_name(device))
        expect_counter(page, 20)
        page.goto("/")
        expect(page).to_have_url(re.compile(r"/chat$"))  # signed in: home is the chat

        chat_until_out_of_credits(page, screenshots / f"chat-{device}.png")
        assert_accessible(page)  # with the modal open

        page.get_by_role("link", name="Go to billing").click()
        page.wait_for_url("**/billing")
        buy_and_upgrade(page, screenshots / f"billing-{device}.png")
        assert_accessible(page)
        assert not errors, errors
    finally:
        context.close()


def test_account_keys_history_and_logout(browser: Browser, live_server: LiveServer) -> None:
    """API keys come with the plan, the secret is shown once, history pages, logout and back."""
    context = browser.new_context(base_url=live_server.url, viewport=DESKTOP)
    page = context.new_page()
    errors = uncaught_errors(page)
    username = unique_name("acct")
    try:
        sign_up(page, username)
        assert send(page, "help").status == 200

        page.goto("/account")
        expect(page.locator("[data-account-tier]")).to_have_text("Free")
        expect(page.locator("[data-keys-gated]")).to_contain_text("API keys come with the Starter")
        expect(page.get_by_label("Key name")).to_be_hidden()
        expect(page.locator("[data-usage-page]")).to_have_text("1–1 of 1")
        expect(page.get_by_role("button", name="Older →")).to_be_disabled()
        assert_accessible(page)

        page.goto("/billing")
        page.get_by_role("button", name="Upgrade to Starter").click()
        page.get_by_role("dialog", name="Upgrade to Starter?").get_by_role("button", name="Upgrade to Starter").click()
        expect(page.locator("[data-tier-badge]")).to_have_text("Starter plan")
        # 20 more actions through the API (same session cookie) fill a second page of history.
        csrf = next(c["value"] for c in context.cookies() if c["name"] == "csrf_token")
        for _ in range(20):
            sent = page.request.post("/api/chat", data={"message": "help"}, headers={"X-CSRF-Token": csrf})
            assert sent.status == 200

        page.goto("/account")
        expect(page.locator("[data-usage-page]")).to_have_text("1–20 of 21")
        page.get_by_role("button", name="Older →").click()
        expect(page.locator("[data-usage-page]")).to_have_text("21–21 of 21")
        expect(page.locator("[data-usage-body] tr")).to_have_count(1)
        expect(page.get_by_role("button", name="Older →")).to_be_disabled()

        page.get_by_label("Key name").fill("ci")
        page.get_by_role("button", name="Create key").click()
        secret = page.locator("[data-secret]")
        expect(secret).to_have_text(re.compile(r"^da_live_"))
        row = page.locator("[data-keys-body] tr", has_text="ci")
        expect(row).to_have_count(1)
        assert secret.inner_text() not in row.inner_text(), "the list shows a prefix, never the secret"

        page.once("dialog", lambda d: d.accept())
        row.get_by_role("button", name="Revoke key ci").click()
        expect(page.locator("[data-keys-body] tr")).to_have_count(0)
        expect(page.get_by_text("No API keys yet.")).to_be_visible()

        page.get_by_role("button", name="Log out", exact=True).click()
        page.wait_for_url(re.compile(r"/$"))
        expect(page.get_by_role("heading", name="Run your cloud chores by chatting")).to_be_visible()
        page.goto("/chat")
        page.wait_for_url(re.compile(r"/login\?next=/chat$"))
        page.get_by_label("Username or email").fill(username)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url("**/chat")
        expect_counter(page, 180)
        assert not errors, errors
    finally:
        context.close()
