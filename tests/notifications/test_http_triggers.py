"""The web layer queues emails after its transaction commits: receipts, a team pool running low."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from devops_agent import billing, notifications
from devops_agent.db import Database
from devops_agent.notifications import Notifier
from tests.notifications.conftest import Inbox
from tests.orgs.test_api import join, pro
from tests.web.conftest import build_app, make_client, register


async def test_buying_a_pack_over_http_emails_a_receipt(
    db: Database, tmp_path: Path, inbox: Inbox, make_notifier: Callable[..., Notifier]
) -> None:
    app = build_app(db, tmp_path)
    notifier = notifications.install(db, make_notifier(db))
    async with make_client(app) as client:
        user = await register(client, "buyer")
        response = await client.post("/api/credits/purchase", json={"pack_size": 250})
        assert response.status_code == 200
        # A retry with the same Idempotency-Key replays the answer and sends nothing more.
        for _ in range(2):
            await client.post("/api/credits/purchase", json={"pack_size": 100}, headers={"Idempotency-Key": "k1"})
    await notifier.wait_idle()
    notifications.forget(db)
    assert sorted(inbox.subjects()) == ["Receipt: 100 DevOps Agent credits", "Receipt: 250 DevOps Agent credits"]
    assert all(m["To"] == f"{user['username']}@example.com" for m in inbox.messages)


async def test_a_team_chat_that_drains_the_pool_warns_the_owner(
    db: Database, tmp_path: Path, inbox: Inbox, make_notifier: Callable[..., Notifier]
) -> None:
    app = build_app(db, tmp_path)
    notifier = notifications.install(db, make_notifier(db))
    async with make_client(app) as owner, make_client(app) as dev_client:
        boss = await pro(owner, "boss")
        org = (await owner.post("/api/orgs", json={"name": "Night Shift"})).json()["organization"]
        dev = await register(dev_client)
        await join(owner, org["id"], dev_client, dev)
        async with db.transaction() as s:  # the pool is down to 5 credits
            await billing.adjust(
                s, user_id=boss["id"], org_id=org["id"], amount=-15, reason="test", admin_id=None, now=app.state.clock()
            )
        reply = await dev_client.post("/api/chat", json={"message": "help", "org_id": org["id"]})
        assert reply.status_code == 200, reply.text
    await notifier.wait_idle()
    notifications.forget(db)
    # The invitation went to the member; the warning to the owner.
    assert {m["To"]: str(m["Subject"]) for m in inbox.messages} == {
        dev["email"]: "Join Night Shift on DevOps Agent",
        "boss@example.com": "Night Shift: only 4 team credits left",
    }
