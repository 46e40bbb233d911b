"""Browser sessions kept server-side: opened at login, ended by logout, everywhere at once, or by a new password.

The signed session cookie (``web.security``) names a row of ``user_sessions``; the
request's user is read through that row (one indexed read, the same query that loads
the user), so a deleted row ends the session on every worker, for every copy of the
cookie. API keys are not sessions: nothing here touches them.

Like the services, these functions take an open session, flush and never commit.
"""

from __future__ import annotations

from datetime import datetime

from fastapi import Request, Response
from sqlalchemy import bindparam, delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from devops_agent.billing.models import User
from devops_agent.web.models import UserSession
from devops_agent.web.security import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    SessionData,
    new_csrf_token,
    new_session_id,
    password_fingerprint,
    session_id_hash,
)

# Where authentication leaves the session of a cookie-authenticated request.
REQUEST_SESSION = "login_session"


async def open_session(session: AsyncSession, *, user: User, now: datetime) -> SessionData:
    """Record a new session of ``user``; the returned data goes into the cookie (``set_cookies``)."""
    session_id = new_session_id()
    session.add(UserSession(id_hash=session_id_hash(session_id), user_id=user.id, created_at=now))
    await session.flush()
    return SessionData(user.id, new_csrf_token(), password_fingerprint(user.password_hash), session_id)


# Built once: it runs on every request a cookie authenticates.
_USER_BY_SESSION = (
    select(User)
    .join(UserSession, UserSession.user_id == User.id)
    .where(UserSession.id_hash == bindparam("id_hash"), User.id == bindparam("user_id"))
)


async def user_by_session(session: AsyncSession, data: SessionData) -> User | None:
    """The user of a live session: the session row by its key, joined to its user (both by primary key)."""
    found = await session.execute(
        _USER_BY_SESSION, {"id_hash": session_id_hash(data.session_id), "user_id": data.user_id}
    )
    return found.scalar_one_or_none()


async def end_session(session: AsyncSession, *, data: SessionData) -> None:
    """End one session (logout)."""
    await session.execute(
        delete(UserSession).where(
            UserSession.id_hash == session_id_hash(data.session_id), UserSession.user_id == data.user_id
        )
    )


async def end_sessions(session: AsyncSession, *, user_id: int, keep: SessionData | None = None) -> None:
    """End every session of the user, but ``keep`` (the one asking) when given."""
    statement = delete(UserSession).where(UserSession.user_id == user_id)
    if keep is not None:
        statement = statement.where(UserSession.id_hash != session_id_hash(keep.session_id))
    await session.execute(statement)


def current_session(request: Request) -> SessionData | None:
    """The session the request was authenticated by (None for an API key or no login)."""
    data: SessionData | None = getattr(request.state, REQUEST_SESSION, None)
    return data


def set_cookies(request: Request, response: Response, data: SessionData, *, secure: bool) -> None:
    """The signed, HttpOnly ``session`` cookie and the readable ``csrf_token`` (double submit)."""
    signer = request.app.state.sessions
    common = {"max_age": signer.max_age, "secure": secure, "samesite": "lax", "path": "/"}
    response.set_cookie(SESSION_COOKIE, signer.dumps(data), httponly=True, **common)
    response.set_cookie(CSRF_COOKIE, data.csrf, httponly=False, **common)


def clear_cookies(response: Response, *, secure: bool) -> None:
    for name, httponly in ((SESSION_COOKIE, True), (CSRF_COOKIE, False)):
        response.delete_cookie(name, path="/", secure=secure, httponly=httponly, samesite="lax")
