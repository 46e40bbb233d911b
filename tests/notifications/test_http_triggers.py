"""The web layer queues emails after its transaction commits: a demo pack purchase sends its receipt."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from devops_agent import notifications
from devops_agent.db import Database
from devops_agent.notifications import Notifier
from tests.notifications.conftest import Inbox
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
