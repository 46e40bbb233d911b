"""A team with real money and real email, in Chromium: the owner pays for the pool through Stripe
Checkout (localstripe and the edge server), invites by email (aiosmtpd), and the member joins
from the email's link.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from aiosmtpd.controller import Controller
from playwright.sync_api import Browser, expect

from devops_agent import billing
from devops_agent.billing.periods import utcnow
from devops_agent.config import Settings
from devops_agent.db import Database
from tests.browser.conftest import LiveServer, serve
from tests.browser.helpers import DESKTOP, assert_accessible, sign_up, uncaught_errors, unique_name
from tests.browser.test_stripe_checkout import deliver
from tests.payments.conftest import stripe_settings
from tests.payments.edge import Edge, free_port, pay_checkout, running_edge


class Inbox:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 (aiosmtpd's name)
        self.messages.append(message_from_bytes(envelope.original_content or envelope.content))
        return "250 Message accepted for delivery"

    def wait_for(self, to: str) -> Message:
        deadline = time.monotonic() + 20  # the outbox drains in the background right after the request
        while time.monotonic() < deadline:
            for message in self.messages:
                if message["To"] == to:
                    return message
            time.sleep(0.05)
        raise AssertionError(f"no email to {to}; got {[m['To'] for m in self.messages]}")


@pytest.fixture(scope="module")
def inbox() -> Iterator[tuple[Inbox, int]]:
    box, port = Inbox(), free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    yield box, port
    controller.stop()


@pytest.fixture(scope="module")
def edge() -> Iterator[Edge]:
    with running_edge() as server:
        yield server


@pytest.fixture(scope="module")
def team_server(edge: Edge, inbox: tuple[Inbox, int], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    port = free_port()
    settings = {
        **stripe_settings(edge),
        "public_base_url": f"http://127.0.0.1:{port}",
        "smtp_url": f"smtp://127.0.0.1:{inbox[1]}",
    }
    with serve(tmp_path_factory.mktemp("team-server"), port=port, **settings) as server:
        yield server


def make_professional(settings: Settings, username: str) -> None:
    """The owner's own plan includes teams (bought earlier; here set through the engine)."""

    async def move() -> None:
        db = Database(settings.database_url)
        try:
            async with db.transaction() as session:
                from sqlalchemy import select

                from devops_agent.billing.models import User

                user = (await session.execute(select(User).where(User.username == username))).scalar_one()
                tier = await billing.tier_by_name(session, "professional")
                await billing.change_tier(session, user_id=user.id, tier_id=tier.id, now=utcnow())
        finally:
            await db.dispose()

    with ThreadPoolExecutor(1) as pool:  # Playwright's sync API keeps an event loop running in this thread
        pool.submit(asyncio.run, move()).result()


def test_owner_pays_for_the_pool_through_checkout_and_the_member_joins_from_the_email(
    browser: Browser, team_server: LiveServer, edge: Edge, inbox: tuple[Inbox, int], tmp_path: Path
) -> None:
    owner_ctx = browser.new_context(base_url=team_server.url, viewport=DESKTOP)
    member_ctx = browser.new_context(base_url=team_server.url, viewport=DESKTOP)
    try:
        owner = owner_ctx.new_page()
        errors = uncaught_errors(owner)
        owner_name = unique_name("owner")
        sign_up(owner, owner_name)
        make_professional(team_server.settings, owner_name)
        owner.goto("/orgs")
        owner.get_by_label("Name").fill("Night Shift")
        owner.get_by_role("button", name="Create organization").click()
        owner.wait_for_url("**/orgs/*")
        org_path = urlparse(owner.url).path
        expect(owner.locator("[data-pool-credits]")).to_have_text("20")

        # The owner buys a pack for the pool: Stripe Checkout, then the webhook credits the pool.
        owner.get_by_label("Credit pack").select_option("250")
        owner.get_by_role("button", name="Buy for the team").click()
        owner.wait_for_url(re.compile(re.escape(edge.url) + r"/pay/"))
        session_id = owner.url.rsplit("/", 1)[1]
        assert edge.sessions[session_id]["metadata"]["org_id"] == org_path.rsplit("/", 1)[1]
        paid = pay_checkout(edge, session_id)
        owner.goto(f"{org_path}?checkout=success")
        expect(owner.locator("[data-org-status]")).to_contain_text("Stripe has your payment")
        expect(owner.locator("[data-pool-credits]")).to_have_text("20")  # the redirect alone grants nothing
        deliver(team_server, "checkout.session.completed", paid)
        owner.reload()
        expect(owner.locator("[data-pool-credits]")).to_have_text("270")
        expect(owner.locator("[data-seats-used]")).to_have_text("1")
        expect(owner.locator("[data-seats-included]")).to_have_text("5")

        # The invitation goes out by email; the member joins from its link.
        member_name = unique_name("member")
        owner.get_by_label("Email").fill(f"{member_name}@example.com")
        owner.get_by_role("button", name="Create invitation").click()
        expect(owner.locator("[data-invite-link]")).to_contain_text("on its way by email")
        email = inbox[0].wait_for(f"{member_name}@example.com")
        assert email["Subject"] == "Join Night Shift on DevOps Agent"
        body = email.get_payload(decode=True).decode()
        link = re.search(r"(http://\S+/orgs/join/\S+)", body)
        assert link is not None, body

        member = member_ctx.new_page()
        sign_up(member, member_name)
        member.goto(link.group(1))
        expect(member.locator("[data-join-summary]")).to_contain_text("Night Shift as member")
        member.get_by_role("button", name="Accept the invitation").click()
        member.wait_for_url("**/orgs/*")
        expect(member.locator("[data-org-role]")).to_have_text("member")
        expect(member.locator("[data-pool-credits]")).to_have_text("270")

        owner.reload()
        expect(owner.locator("[data-seats-used]")).to_have_text("2")
        expect(owner.locator(f'[data-billing-member="{member_name}"]')).to_contain_text("0")
        assert_accessible(owner)
        assert not errors, errors
    finally:
        owner_ctx.close()
        member_ctx.close()
