"""The team story in a real Chromium: the owner creates an organization and invites, the member
accepts and chats in the team workspace, the owner sees what the member used.

Two browser contexts (two people, two cookie jars) on the live app over real HTTP.
"""

from __future__ import annotations

from urllib.parse import urlparse

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.conftest import LiveServer
from tests.browser.helpers import CHROMIUM, DESKTOP, assert_accessible, expect_counter, sign_up, unique_name

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM}"),
]


def upgrade_to_professional(page: Page) -> None:
    """The owner's plan must include team collaboration (demo payments: at once)."""
    csrf = next(c["value"] for c in page.context.cookies() if c["name"] == "csrf_token")
    tiers = page.request.get("/api/subscription/tiers").json()["tiers"]
    professional = next(t["id"] for t in tiers if t["name"] == "professional")
    answer = page.request.post(
        "/api/subscription/upgrade", data={"tier_id": professional}, headers={"X-CSRF-Token": csrf}
    )
    assert answer.ok, answer.text()


def test_owner_invites_member_chats_in_team_workspace_owner_sees_usage(
    browser: Browser, live_server: LiveServer
) -> None:
    owner_ctx = browser.new_context(base_url=live_server.url, viewport=DESKTOP)
    member_ctx = browser.new_context(base_url=live_server.url, viewport=DESKTOP)
    try:
        owner = owner_ctx.new_page()
        owner_name = unique_name("owner")
        sign_up(owner, owner_name)
        upgrade_to_professional(owner)

        owner.goto("/orgs")
        owner.get_by_label("Name").fill("Platform team")
        owner.get_by_role("button", name="Create organization").click()
        owner.wait_for_url("**/orgs/*")
        expect(owner.locator("[data-org-name]")).to_have_text("Platform team")
        expect(owner.locator("[data-org-role]")).to_have_text("owner")
        expect(owner.locator("[data-pool-credits]")).to_have_text("20")

        member_name = unique_name("member")
        owner.get_by_label("Email").fill(f"{member_name}@example.com")
        owner.get_by_role("button", name="Create invitation").click()
        link = owner.locator("[data-invite-url]")
        expect(link).to_contain_text("/orgs/join/")
        invite_path = urlparse(link.inner_text()).path
        expect(owner.locator("[data-invitations] li")).to_have_count(1)
        assert_accessible(owner)

        member = member_ctx.new_page()
        sign_up(member, member_name)
        member.goto(invite_path)
        expect(member.locator("[data-join-summary]")).to_contain_text("Platform team as member")
        member.get_by_role("button", name="Accept the invitation").click()
        member.wait_for_url("**/orgs/*")
        expect(member.locator("[data-org-role]")).to_have_text("member")
        org_path = urlparse(member.url).path

        # Chat in the team workspace: the pool pays, the personal counter stays at 20.
        member.get_by_role("link", name="Chat in this workspace").click()
        member.wait_for_url("**/chat?org=*")
        expect(member.get_by_label("Workspace (who pays)")).to_have_value(org_path.rsplit("/", 1)[1])
        box = member.get_by_label("Message", exact=True)
        box.fill("list my EC2 instances")
        with member.expect_response(lambda r: r.url.endswith("/api/chat") and r.request.method == "POST") as answer:
            box.press("Enter")
        reply = answer.value.json()
        assert answer.value.status == 200
        assert (reply["credits_used"], reply["credits_remaining"]) == (2, 18)
        expect(member.locator(".message-assistant").last.locator("[data-reply-meta]")).to_have_text(
            "Cost 2 credits · 18 credits left"
        )
        expect_counter(member, 20)

        # The owner sees the member's use, per tool.
        owner.goto(org_path)
        row = owner.locator(f'[data-usage-member="{member_name}"]')
        expect(row).to_contain_text("2")
        expect(row).to_contain_text("List EC2 instances: 1")
        expect(owner.locator("[data-pool-credits]")).to_have_text("18")
        expect(owner.locator(f'[data-member="{member_name}"]')).to_contain_text("member")

        # The billing page lists the team's pool beside the owner's own credits.
        owner.goto("/billing")
        expect(owner.locator("[data-billing-teams-list]")).to_contain_text("Platform team")
        expect(owner.locator("[data-billing-teams-list]")).to_contain_text("18 credits in the pool")
    finally:
        owner_ctx.close()
        member_ctx.close()
