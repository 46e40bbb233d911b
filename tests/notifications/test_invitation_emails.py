"""Invitations go out by email through the outbox, and the database never holds a usable link."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import select

from devops_agent import notifications
from devops_agent.billing.org_models import OrganizationInvitation
from devops_agent.db import Database
from devops_agent.notifications import EmailOutbox, Notifier, OutboxStatus
from tests.notifications.conftest import Inbox
from tests.orgs.test_api import pro
from tests.web.conftest import build_app, make_client, register

LINK = re.compile(r"http://agent\.test/orgs/join/(\S+)")


def link_token(inbox: Inbox, index: int = -1) -> str:
    body = inbox.messages[index].get_payload(decode=True).decode()
    found = LINK.search(body)
    assert found is not None, body
    return found.group(1)


async def dump(db: Database) -> str:
    """Everything the database holds about invitations and their emails, as one text."""
    async with db.transaction() as s:
        rows: list[Any] = list((await s.execute(select(EmailOutbox))).scalars())
        rows += list((await s.execute(select(OrganizationInvitation))).scalars())
    return repr([{c: getattr(r, c) for c in r.__table__.columns.keys()} for r in rows])  # noqa: SIM118


async def team(app: FastAPI, owner: httpx.AsyncClient, name: str = "Night Shift") -> int:
    await pro(owner, "boss")
    return int((await owner.post("/api/orgs", json={"name": name})).json()["organization"]["id"])


async def test_an_invitation_is_emailed_and_its_link_lets_the_invitee_join(
    db: Database, tmp_path: Path, inbox: Inbox, make_notifier: Callable[..., Notifier]
) -> None:
    app = build_app(db, tmp_path)
    notifier = notifications.install(db, make_notifier(db))
    async with make_client(app) as owner, make_client(app) as guest:
        org_id = await team(app, owner)
        made = await owner.post(f"/api/orgs/{org_id}/invitations", json={"email": "Dev@Example.com", "role": "admin"})
        assert made.status_code == 201, made.text
        await notifier.wait_idle()
        assert inbox.subjects() == ["Join Night Shift on DevOps Agent"]
        message = inbox.messages[0]
        assert message["To"] == "dev@example.com"
        body = message.get_payload(decode=True).decode()
        assert "boss invites you to join Night Shift on DevOps Agent as an admin" in body
        token = link_token(inbox)
        assert token == made.json()["token"]
        # The database holds the token's hash only: neither the invitation nor the delivered email has it.
        assert token not in await dump(db)

        await register(guest, "dev")
        joined = await guest.post("/api/orgs/invitations/accept", json={"token": token})
        assert joined.status_code == 200, joined.text
        assert joined.json()["organization"]["role"] == "admin"
    notifications.forget(db)


async def test_a_queued_invitation_keeps_only_a_sealed_token_that_another_key_cannot_open(
    db: Database, tmp_path: Path, inbox: Inbox, make_notifier: Callable[..., Notifier]
) -> None:
    app = build_app(db, tmp_path)
    notifier = notifications.install(db, make_notifier(db, secret="the-app-secret"))
    inbox.replies = ["421 Service not available"] * 3  # the SMTP server is down: the email waits
    async with make_client(app) as owner:
        org_id = await team(app, owner)
        made = await owner.post(f"/api/orgs/{org_id}/invitations", json={"email": "dev@example.com"})
        await notifier.wait_idle()
    notifications.forget(db)
    token = made.json()["token"]
    stored = await dump(db)
    assert token not in stored
    async with db.transaction() as s:
        waiting = (await s.execute(select(EmailOutbox))).scalar_one()
        assert (waiting.status, waiting.user_id) == (OutboxStatus.PENDING, None)
        assert waiting.sealed_token
        assert token not in waiting.body
        waiting.next_attempt_at = waiting.created_at  # due again

    # Whoever has the database but not the key gets nothing out of it.
    thief = make_notifier(db, secret="another-secret")
    report = await thief.drain()
    assert (report.sent, report.failed, inbox.messages) == (0, 1, [])
    async with db.transaction() as s:
        failed = (await s.execute(select(EmailOutbox))).scalar_one()
        assert (failed.status, failed.sealed_token) == (OutboxStatus.FAILED, None)


async def test_resending_mails_a_new_link_and_voids_the_old_one(
    db: Database, tmp_path: Path, inbox: Inbox, make_notifier: Callable[..., Notifier]
) -> None:
    app = build_app(db, tmp_path)
    notifier = notifications.install(db, make_notifier(db))
    async with make_client(app) as owner, make_client(app) as guest:
        org_id = await team(app, owner)
        made = await owner.post(f"/api/orgs/{org_id}/invitations", json={"email": "dev@example.com"})
        invitation_id = made.json()["invitation"]["id"]
        await notifier.wait_idle()
        old = link_token(inbox)
        app.state.clock.advance(days=6)  # a resend gives the new link a full week
        again = await owner.post(f"/api/orgs/{org_id}/invitations/{invitation_id}/resend")
        assert again.status_code == 200, again.text
        assert again.json()["invitation"]["expires_at"].startswith("2026-01-28")
        await notifier.wait_idle()
        assert len(inbox.messages) == 2
        new = link_token(inbox)
        assert new != old
        assert new == again.json()["token"]

        await register(guest, "dev")
        dead = await guest.post("/api/orgs/invitations/accept", json={"token": old})
        assert (dead.status_code, dead.json()["error"]) == (404, "invitation_not_found")
        assert (await guest.post("/api/orgs/invitations/accept", json={"token": new})).status_code == 200
    notifications.forget(db)


async def test_accepted_revoked_and_expired_invitations_cannot_be_resent(
    db: Database, tmp_path: Path, inbox: Inbox, make_notifier: Callable[..., Notifier]
) -> None:
    app = build_app(db, tmp_path)
    notifier = notifications.install(db, make_notifier(db))
    async with make_client(app) as owner, make_client(app) as guest, make_client(app) as member:
        org_id = await team(app, owner)
        await register(guest, "dev")
        invite = f"/api/orgs/{org_id}/invitations"
        accepted = (await owner.post(invite, json={"email": "dev@example.com"})).json()
        await guest.post("/api/orgs/invitations/accept", json={"token": accepted["token"]})
        revoked = (await owner.post(invite, json={"email": "gone@example.com"})).json()
        assert (await owner.delete(f"{invite}/{revoked['invitation']['id']}")).status_code == 204
        expired = (await owner.post(invite, json={"email": "late@example.com"})).json()
        await notifier.wait_idle()
        sent = len(inbox.messages)

        refused = {
            name: await owner.post(f"{invite}/{made['invitation']['id']}/resend")
            for name, made in (("accepted", accepted), ("revoked", revoked))
        }
        app.state.clock.advance(days=8)
        refused["expired"] = await owner.post(f"{invite}/{expired['invitation']['id']}/resend")
        assert {k: (r.status_code, r.json()["error"]) for k, r in refused.items()} == {
            "accepted": (409, "invitation_used"),
            "revoked": (409, "invitation_used"),
            "expired": (410, "invitation_expired"),
        }
        # Members cannot resend; another organization's invitation is not found.
        fresh = (await owner.post(invite, json={"email": "new@example.com"})).json()
        forbidden = await guest.post(f"{invite}/{fresh['invitation']['id']}/resend")
        assert (forbidden.status_code, forbidden.json()["error"]) == (403, "forbidden")
        await register(member, "outsider")
        stranger = await member.post(f"{invite}/{fresh['invitation']['id']}/resend")
        assert stranger.status_code == 404
        await notifier.wait_idle()
    notifications.forget(db)
    assert len(inbox.messages) == sent + 1  # only the fresh invitation's email


async def test_a_revoked_invitation_whose_email_still_waits_is_never_sent(
    db: Database, tmp_path: Path, inbox: Inbox, make_notifier: Callable[..., Notifier]
) -> None:
    app = build_app(db, tmp_path)
    notifier = notifications.install(db, make_notifier(db))
    inbox.replies = ["421 Service not available"] * 3  # the SMTP server is down: the email waits
    async with make_client(app) as owner:
        org_id = await team(app, owner)
        made = await owner.post(f"/api/orgs/{org_id}/invitations", json={"email": "dev@example.com"})
        await notifier.wait_idle()
        revoked = await owner.delete(f"/api/orgs/{org_id}/invitations/{made.json()['invitation']['id']}")
        assert revoked.status_code == 204
    async with db.transaction() as s:
        row = (await s.execute(select(EmailOutbox))).scalar_one()
        assert (row.status, row.sealed_token) == (OutboxStatus.SKIPPED, None)
        row.next_attempt_at = row.created_at
    report = await notifier.drain()  # the server is back: nothing is due
    notifications.forget(db)
    assert (report.sent, inbox.messages) == (0, [])
