"""Accounts: register, login (username or email), logout, me.

Login and register set two cookies: the signed, HttpOnly ``session`` and the readable
``csrf_token`` that browser code copies into ``X-CSRF-Token`` (the contract's
double-submit). Login is throttled per account and per client address
(``web.ratelimit``); its password check runs outside any transaction.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status
from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError

from devops_agent.billing import credits
from devops_agent.billing.models import User
from devops_agent.web.api import errors
from devops_agent.web.deps import ClockDep, CurrentUser, DatabaseDep, OptionalUser, SettingsDep
from devops_agent.web.errors import ApiError
from devops_agent.web.ratelimit import Refusal, RegistrationLimiter
from devops_agent.web.schemas import LoginIn, RegisterIn, UserEnvelope, user_out
from devops_agent.web.security import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    SessionData,
    new_csrf_token,
    password_fingerprint,
)

router = APIRouter(prefix="/api/auth", tags=["accounts"])


def _start_session(request: Request, response: Response, user: User, secure: bool) -> None:
    csrf = new_csrf_token()
    signer = request.app.state.sessions
    cookie = signer.dumps(SessionData(user.id, csrf, password_fingerprint(user.password_hash)))
    common = {"max_age": signer.max_age, "secure": secure, "samesite": "lax", "path": "/"}
    response.set_cookie(SESSION_COOKIE, cookie, httponly=True, **common)
    response.set_cookie(CSRF_COOKIE, csrf, httponly=False, **common)


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
    body: RegisterIn, request: Request, response: Response, db: DatabaseDep, now: ClockDep, settings: SettingsDep
) -> UserEnvelope:
    email = body.email.strip().lower()
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
            clash = await session.execute(
                select(User.id).where(
                    or_(func.lower(User.username) == body.username.lower(), func.lower(User.email) == email)
                )
            )
            if clash.first() is not None:
                raise taken
            user = User(
                username=body.username,
                email=email,
                password_hash=password_hash,
                is_admin=False,
                is_suspended=False,
                email_opt_out=False,
                created_at=now,
            )
            session.add(user)
            await session.flush()
            await credits.open_account(session, user_id=user.id, now=now)
    except IntegrityError:  # a concurrent registration took the name first
        raise taken from None
    request.state.user_id = user.id
    _start_session(request, response, user, settings.cookie_secure)
    return UserEnvelope(user=user_out(user))


@router.post(
    "/login",
    response_model=UserEnvelope,
    summary="Log in with username or email",
    responses=errors(400, 401, 413, 422, 429),
)
async def login(
    body: LoginIn, request: Request, response: Response, db: DatabaseDep, now: ClockDep, settings: SettingsDep
) -> UserEnvelope:
    limiter = request.app.state.login_limiter
    address = _client_address(request)
    name = body.username.strip()
    async with db.transaction() as session:
        refusal = await limiter.check(session, username=name, address=address, now=now)
        user = None
        if refusal is None:
            user = (
                await session.execute(
                    select(User).where(
                        or_(func.lower(User.username) == name.lower(), func.lower(User.email) == name.lower())
                    )
                )
            ).scalar_one_or_none()
    if refusal is not None:
        raise _rate_limited(refusal, "Too many failed logins")
    ok = await request.app.state.passwords.verify(user.password_hash if user else None, body.password)
    async with db.transaction() as session:
        if ok:
            await limiter.record_success(session, username=name)
        else:
            await limiter.record_failure(session, username=name, address=address, now=now)
    if not ok or user is None:
        raise ApiError(401, "invalid_credentials", "Wrong username, email or password.")
    if user.is_suspended:
        raise ApiError(403, "forbidden", "This account is suspended.")
    request.state.user_id = user.id
    _start_session(request, response, user, settings.cookie_secure)
    return UserEnvelope(user=user_out(user))


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="End the browser session",
    responses=errors(401, 403),
)
async def logout(_user: OptionalUser, settings: SettingsDep) -> Response:
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    for name, httponly in ((SESSION_COOKIE, True), (CSRF_COOKIE, False)):
        response.delete_cookie(name, path="/", secure=settings.cookie_secure, httponly=httponly, samesite="lax")
    return response


@router.get("/me", response_model=UserEnvelope, summary="Who is logged in", responses=errors(401, 403))
async def me(user: CurrentUser) -> UserEnvelope:
    return UserEnvelope(user=user_out(user))
