"""Making a user, the one way: the rules of the names and the password, the row and its credit account.

Registration (``POST /api/auth/register``) and ``devops-agent create-admin`` both call
``create_user``, so a user made either way has the same checks (no username or email
taken, in any case), the same normalised email and a Free credit account from the
first moment. The web's ``RegisterIn`` and the CLI's ``NewUser`` validate with the
same field types, defined here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field
from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from devops_agent import billing
from devops_agent.billing.models import User

USERNAME_PATTERN = r"^[A-Za-z0-9_.\-]{3,32}$"

Username = Annotated[str, Field(pattern=USERNAME_PATTERN, description="3–32 letters, digits, _ . -")]
Email = Annotated[str, Field(min_length=3, max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]
Password = Annotated[str, Field(min_length=8, max_length=1024)]


class NewUser(BaseModel):
    """A new user's name, email and password, checked by the registration form's rules."""

    username: Username
    email: Email
    password: Password


class UserExists(ValueError):
    """The username or the email (compared in any case) belongs to another user."""


def normal_email(email: str) -> str:
    """The stored form of an email address: trimmed, lower case."""
    return email.strip().lower()


async def user_named(session: AsyncSession, name: str) -> User | None:
    """The user whose username or email is ``name``, in any case (how people sign in)."""
    wanted = name.lower()
    return (
        await session.execute(
            select(User).where(or_(func.lower(User.username) == wanted, func.lower(User.email) == wanted))
        )
    ).scalar_one_or_none()


async def create_user(
    session: AsyncSession,
    *,
    username: str,
    email: str,
    password_hash: str,
    now: datetime,
    is_admin: bool = False,
) -> User:
    """Add the user with a Free credit account, in the caller's transaction.

    The password is hashed by the caller, outside any transaction (it is slow on
    purpose). ``UserExists`` when the username or email is taken; a concurrent
    registration of the same name fails on the unique indexes instead
    (``IntegrityError``), which callers answer the same way.
    """
    address = normal_email(email)
    clash = await session.execute(
        select(User.id).where(or_(func.lower(User.username) == username.lower(), func.lower(User.email) == address))
    )
    if clash.first() is not None:
        raise UserExists(f"the username {username} or the email {address} is already registered")
    user = User(
        username=username,
        email=address,
        password_hash=password_hash,
        is_admin=is_admin,
        is_suspended=False,
        email_opt_out=False,
        created_at=now,
    )
    session.add(user)
    await session.flush()
    await billing.open_account(session, user_id=user.id, now=now)
    return user
