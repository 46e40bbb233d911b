"""Making administrators: what ``devops-agent create-admin`` does.

An admin is an ordinary user with ``is_admin``: same login, same credit account. A
new admin is made by ``users.create_user`` after the registration form's checks
(``users.NewUser``) and gets a Free account like anyone; an existing user is promoted
and keeps their password, so running the command twice changes nothing the second time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pydantic import ValidationError

from devops_agent.db import Database

from .passwords import Passwords
from .registration import NewUser, UserExists, create_user, normal_email, user_named


class AdminInputError(ValueError):
    """The username, email or password breaks the registration rules."""


@dataclass(frozen=True)
class AdminResult:
    user_id: int
    username: str
    outcome: str  # "created", "promoted" or "unchanged"


def _validate(username: str, email: str, password: str) -> NewUser:
    try:
        return NewUser(username=username, email=email, password=password)
    except ValidationError as exc:
        fields = ", ".join(sorted({str(e["loc"][0]) for e in exc.errors()}))
        raise AdminInputError(f"invalid {fields}: usernames are 3-32 of A-Z a-z 0-9 _ . -, passwords 8+") from exc


async def promote(db: Database, *, username: str, now: datetime) -> AdminResult | None:
    """Make the existing user ``username`` (or email) an admin; None when there is no such user."""
    async with db.transaction() as session:
        user = await user_named(session, username)
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
    new = _validate(username, normal_email(email), password)
    password_hash = await (passwords or Passwords()).hash(new.password)
    try:
        async with db.transaction() as session:
            user = await create_user(
                session, username=new.username, email=new.email, password_hash=password_hash, now=now, is_admin=True
            )
            return AdminResult(user.id, user.username, "created")
    except UserExists:
        # ``promote`` found no user of that name: the email is another user's.
        raise AdminInputError(f"the email {new.email} belongs to another user; pass that user's name instead") from None
