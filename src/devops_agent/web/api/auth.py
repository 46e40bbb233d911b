"""Accounts: register, login (username or email), logout, log out everywhere, me.

Login and register open a server-side session (``web.sessions``) and set two cookies:
the signed, HttpOnly ``session`` and the readable ``csrf_token`` that browser code
copies into ``X-CSRF-Token`` (the contract's double-submit). Logout ends that session
on the server, so a copy of the cookie stops working too. Login is throttled per
account and per client address (``web.ratelimit``); its password check runs outside
any transaction.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

from fastapi import APIRouter, Request, Response, status
from pydantic import BaseModel, Field
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError

from devops_agent import users
from devops_agent.billing.models import User
from devops_agent.web import sessions
from devops_agent.web.api import errors
from devops_agent.web.deps import CurrentUser, DatabaseDep, NowDep, OptionalUser, SessionDep, SettingsDep
from devops_agent.web.errors import ApiError, BadRequestOnInvalidBody
from devops_agent.web.ratelimit import Refusal, RegistrationLimiter
from devops_agent.web.schemas import FromAttributes, RegisterIn, Strict
from devops_agent.web.security import password_fingerprint

router = APIRouter(prefix="/api/auth", tags=["accounts"])
account_router = APIRouter(prefix="/api/account", tags=["accounts"], route_class=BadRequestOnInvalidBody)


class LoginIn(Strict):
    username: Annotated[str, Field(min_length=1, max_length=254, description="Username or email.")]
    password: Annotated[str, Field(min_length=1, max_length=1024)]


class PasswordChangeIn(Strict):
    current_password: Annotated[str, Field(min_length=1, max_length=1024)]
    new_password: Annotated[str, Field(min_length=8, max_length=1024, description="At least 8 characters.")]


class UserOut(FromAttributes):
    id: int
    username: str
    email: str


class UserEnvelope(BaseModel):
    user: UserOut


def _client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _rate_limited(refusal: Refusal, what: str) -> ApiError:
    return ApiError(
        429,
        "rate_limited",
        f"{what}; try again in {refusal.retry_after} seconds.",
        headers={"Retry-After": str(refusal.retry_after)},
        retry_after=refusal.retry_after,
    )


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    response_model=UserEnvelope,
    summary="Create an account on the Free tier and log in",
    responses=errors(400, 409, 413, 422, 429),
)
async def register(
    body: RegisterIn, request: Request, response: Response, db: DatabaseDep, now: NowDep, settings: SettingsDep
) -> UserEnvelope:
    limiter: RegistrationLimiter = request.app.state.registration_limiter
    address = _client_address(request)
    async with db.transaction() as session:
        refusal = await limiter.check(session, address=address, now=now)
    if refusal is not None:
        raise _rate_limited(refusal, "Too many new accounts from this address")
    password_hash = await request.app.state.passwords.hash(body.password)  # slow on purpose: outside the transaction
    taken = ApiError(409, "already_exists", "That username or email is already registered.")
    try:
        async with db.transaction() as session:
            refusal = await limiter.count(session, address=address, now=now)
            if refusal is not None:  # a concurrent registration took the last place: nothing is written
                raise _rate_limited(refusal, "Too many new accounts from this address")
            user = await users.create_user(
                session, username=body.username, email=body.email, password_hash=password_hash, now=now
            )
            login = await sessions.open_session(session, user=user, now=now)
    except (users.UserExists, IntegrityError):  # taken, or a concurrent registration took it first
        raise taken from None
    request.state.user_id = user.id
    sessions.set_cookies(request, response, login, secure=settings.cookie_secure)
    return UserEnvelope(user=UserOut.model_validate(user))


@router.post(
    "/login",
    response_model=UserEnvelope,
    summary="Log in with username or email",
    responses=errors(400, 401, 413, 422, 429),
)
async def login(
    body: LoginIn, request: Request, response: Response, db: DatabaseDep, now: NowDep, settings: SettingsDep
) -> UserEnvelope:
    limiter = request.app.state.login_limiter
    address = _client_address(request)
    name = body.username.strip()
    async with db.transaction() as session:
        refusal = await limiter.check(session, username=name, address=address, now=now)
        user = None
        if refusal is None:
            user = await users.user_named(session, name)
    if refusal is not None:
        raise _rate_limited(refusal, "Too many failed logins")
    ok = await request.app.state.passwords.verify(user.password_hash if user else None, body.password)
    login = None
    async with db.transaction() as session:
        if ok:
            await limiter.record_success(session, username=name)
            if user is not None and not user.is_suspended:
                login = await sessions.open_session(session, user=user, now=now)
        else:
            await limiter.record_failure(session, username=name, address=address, now=now)
    if not ok or user is None:
        raise ApiError(401, "invalid_credentials", "Wrong username, email or password.")
    if user.is_suspended or login is None:
        raise ApiError(403, "forbidden", "This account is suspended.")
    request.state.user_id = user.id
    sessions.set_cookies(request, response, login, secure=settings.cookie_secure)
    return UserEnvelope(user=UserOut.model_validate(user))


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="End the browser session (on the server: a copy of its cookie stops working too)",
    responses=errors(401, 403),
)
async def logout(request: Request, _user: OptionalUser, session: SessionDep, settings: SettingsDep) -> Response:
    current = sessions.current_session(request)
    if current is not None:
        await sessions.end_session(session, data=current)
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    sessions.clear_cookies(response, secure=settings.cookie_secure)
    return response


@router.post(
    "/logout-everywhere",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="End every browser session of the account, this one included (API keys keep working)",
    responses=errors(401, 403),
)
async def logout_everywhere(user: CurrentUser, session: SessionDep, settings: SettingsDep) -> Response:
    await sessions.end_sessions(session, user_id=user.id)
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    sessions.clear_cookies(response, secure=settings.cookie_secure)
    return response


@router.get("/me", response_model=UserEnvelope, summary="Who is logged in", responses=errors(401, 403))
async def me(user: CurrentUser) -> UserEnvelope:
    return UserEnvelope(user=UserOut.model_validate(user))


@account_router.post(
    "/password",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Change the password; every other session of the account ends, this one stays (API keys too)",
    responses=errors(400, 401, 403, 413, 429),
)
async def change_password(
    body: PasswordChangeIn, request: Request, user: CurrentUser, db: DatabaseDep, now: NowDep, settings: SettingsDep
) -> Response:
    """Wrong current passwords count against the login limit, so a stolen session cannot guess it."""
    limiter = request.app.state.login_limiter
    address = _client_address(request)
    async with db.transaction() as session:
        refusal = await limiter.check(session, username=user.username, address=address, now=now)
    if refusal is not None:
        raise _rate_limited(refusal, "Too many wrong passwords")
    passwords = request.app.state.passwords
    if not await passwords.verify(user.password_hash, body.current_password):  # slow: outside any transaction
        async with db.transaction() as session:
            await limiter.record_failure(session, username=user.username, address=address, now=now)
        raise ApiError(403, "invalid_credentials", "The current password is wrong.", field="current_password")
    new_hash = await passwords.hash(body.new_password)
    current = sessions.current_session(request)
    async with db.transaction() as session:
        await session.execute(update(User).where(User.id == user.id).values(password_hash=new_hash))
        await sessions.end_sessions(session, user_id=user.id, keep=current)
        await limiter.record_success(session, username=user.username)
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    if current is not None:  # this session goes on: its cookie now carries the new password's fingerprint
        renewed = replace(current, fingerprint=password_fingerprint(new_hash))
        sessions.set_cookies(request, response, renewed, secure=settings.cookie_secure)
    return response
