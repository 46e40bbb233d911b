"""Making administrators: what ``devops-agent create-admin`` does.

An admin is an ordinary user with ``is_admin``: same login, same credit account. A
new admin is validated by the same rules as the registration form (``RegisterIn``)
and gets a Free account like anyone; an existing user is promoted and keeps their
password, so running the command twice changes nothing the second time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pydantic import ValidationError
from sqlalchemy import func, or_, select

from devops_agent import billing
from devops_agent.billing.models import User
from devops_agent.db import Database
from devops_agent.web.schemas import RegisterIn
from devops_agent.web.security import Passwords


class AdminInputError(ValueError):
    """The username, email or password breaks the registration rules."""


@dataclass(frozen=True)
class AdminResult:
    user_id: int
    username: str
    outcome: str  # "created", "promoted" or "unchanged"


def _validate(username: str, email: str, password: str) -> RegisterIn:
    try:
        return RegisterIn(username=username, email=email, password=password)
    except ValidationError as exc:
        fields = ", ".join(sorted({str(e["loc"][0]) for e in exc.errors()}))
        raise AdminInputError(f"invalid {fields}: usernames are 3-32 of A-Z a-z 0-9 _ . -, passwords 8+") from exc


async def promote(db: Database, *, username: str, now: datetime) -> AdminResult | None:
    """Make the existing user ``username`` (or email) an admin; None when there is no such user."""
    async with db.transaction() as session:
        user = (
            await session.execute(
                select(User).where(
                    or_(func.lower(User.username) == username.lower(), func.lower(User.email) == username.lower())
                )
            )
        ).scalar_one_or_none()
        if user is None:
            return None
        outcome = "unchanged" if user.is_admin else "promoted"
        user.is_admin = True
        return AdminResult(user.id, user.username, outcome)


async def create_admin(
    db: Database, *, username: str, email: str, password: str, now: datetime, passwords: Passwords | None = None
) -> AdminResult:
    """Create the admin ``username`` with a Free account, or promote the user of that name."""
    existing = await promote(db, username=username, now=now)
    if existing is not None:
        return existing
    body = _validate(username, email.strip().lower(), password)
    password_hash = await (passwords or Passwords()).hash(body.password)
    async with db.transaction() as session:
        clash = await session.scalar(select(User.id).where(func.lower(User.email) == body.email))
        if clash is not None:
            raise AdminInputError(f"the email {body.email} belongs to another user; pass that user's name instead")
        user = User(
            username=body.username,
            email=body.email,
            password_hash=password_hash,
            is_admin=True,
            is_suspended=False,
            email_opt_out=False,
            created_at=now,
        )
        session.add(user)
        await session.flush()
        await billing.open_account(session, user_id=user.id, now=now)
        return AdminResult(user.id, user.username, "created")
