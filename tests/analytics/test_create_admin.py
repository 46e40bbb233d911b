"""`devops-agent create-admin`: creates an admin with a Free account, or promotes a user; idempotent.

One test on purpose: each creation pays the production Argon2 cost.
"""

from __future__ import annotations

import asyncio
from typing import Any

from argon2 import PasswordHasher
from sqlalchemy import select
from typer.testing import CliRunner

from devops_agent.billing.models import User, UserSubscription
from devops_agent.cli import app
from devops_agent.db import Database
from tests.factories import make_user

runner = CliRunner()


def _run(url: str, work: Any) -> Any:
    async def go() -> Any:
        db = Database(url)
        try:
            async with db.transaction() as s:
                return await work(s)
        finally:
            await db.dispose()

    return asyncio.run(go())


def test_create_admin_creates_promotes_prompts_and_refuses_weak_passwords(env: str) -> None:
    created = runner.invoke(
        app, ["create-admin", "root", "--email", "Root@Example.com"], env={"DEVOPS_AGENT_ADMIN_PASSWORD": "s3cret-pass"}
    )
    assert created.exit_code == 0, created.output
    assert "Admin root (user 1): created." in created.output

    async def admin_row(s: Any) -> tuple[User, UserSubscription]:
        user = (await s.execute(select(User).where(User.username == "root"))).scalar_one()
        account = (await s.execute(select(UserSubscription).where(UserSubscription.user_id == user.id))).scalar_one()
        return user, account

    user, account = _run(env, admin_row)
    assert (user.is_admin, user.email, account.credits_remaining) == (True, "root@example.com", 20)
    assert PasswordHasher().verify(user.password_hash, "s3cret-pass")

    again = runner.invoke(app, ["create-admin", "root"])
    assert "Admin root (user 1): unchanged." in again.output

    _run(env, lambda s: make_user(s, username="carol"))
    promoted = runner.invoke(app, ["create-admin", "CAROL@example.com"])
    assert "Admin carol (user 2): promoted." in promoted.output

    # Without --email and --password it prompts; a weak password is refused and creates nothing.
    weak = runner.invoke(app, ["create-admin", "ops"], input="ops@example.com\nshort\nshort\n")
    assert weak.exit_code == 1
    assert "invalid password" in weak.output
    prompted = runner.invoke(app, ["create-admin", "ops"], input="ops@example.com\nlong-enough\nlong-enough\n")
    assert prompted.exit_code == 0, prompted.output
    assert "created" in prompted.output
