"""FastAPI dependencies: the database, one transaction per request, the clock and who is asking.

Endpoint signatures read like prose with these ``Annotated`` aliases::

    async def get_subscription(user: CurrentUser, session: SessionDep, now: NowDep): ...

``SessionDep`` opens ONE transaction for the request and commits it before the
response is sent (an error rolls it back); endpoints never commit. Authentication
runs in a short transaction of its own and hands back a detached ``User``, so an
endpoint that calls a payment gateway (which opens its own transactions, and may
wait on the network) holds no transaction meanwhile.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, Header, Request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from devops_agent import billing
from devops_agent.billing.models import SubscriptionTier, User, UserSubscription
from devops_agent.config import Settings
from devops_agent.db import Database
from devops_agent.payments.gateway import PaymentGateway
from devops_agent.web import sessions
from devops_agent.web.errors import ApiError
from devops_agent.web.models import ApiKey
from devops_agent.web.security import (
    CSRF_COOKIE,
    CSRF_HEADER,
    SESSION_COOKIE,
    hash_api_key,
    password_fingerprint,
    tokens_match,
)

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
API_ACCESS = "api_access"


# The dependencies below are ``async def`` although they do no I/O: FastAPI runs a plain
# ``def`` dependency in its thread pool, a thread hop per request and dependency
# (measured: 20 hops per chat request; 16 clients chatting in-process went from 32 to
# 46 chats/s once they were gone).


def database_of(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


async def get_database(request: Request) -> Database:
    return database_of(request)


async def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_gateway(request: Request) -> PaymentGateway:
    gateway: PaymentGateway = request.app.state.gateway
    return gateway


async def get_now(request: Request) -> datetime:
    clock: Callable[[], datetime] = request.app.state.clock
    return clock()


REQUEST_SESSION = "db_session"


def _writes(request: Request) -> bool:
    """Whether the request is expected to write: POST, PUT, PATCH and DELETE.

    Reads (GET, HEAD) open their transaction without SQLite's write lock, so they answer
    while another process (a cron command, a backup) writes; a GET that does write
    (a due monthly reset) then gets a 503 to retry instead of waiting.
    """
    return request.method in UNSAFE_METHODS


async def get_session(request: Request, db: Annotated[Database, Depends(get_database)]) -> AsyncIterator[AsyncSession]:
    """The request's one transaction; other dependencies of the request find and reuse it."""
    async with db.transaction(write=_writes(request)) as session:
        setattr(request.state, REQUEST_SESSION, session)
        try:
            yield session
        finally:
            setattr(request.state, REQUEST_SESSION, None)


@asynccontextmanager
async def request_transaction(request: Request) -> AsyncIterator[AsyncSession]:
    """The request's open ``SessionDep`` transaction if there is one, else a short one of its own.

    Dependencies that read the database (authentication, plan features) use this, so
    they never wait for a second transaction while the request holds the first (on
    SQLite that would wait forever: transactions are serialised by one lock).
    """
    open_session: AsyncSession | None = getattr(request.state, REQUEST_SESSION, None)
    if open_session is not None:
        yield open_session
        return
    async with database_of(request).transaction(write=_writes(request)) as session:
        yield session


@asynccontextmanager
async def request_reads(request: Request) -> AsyncIterator[AsyncSession]:
    """Like ``request_transaction`` but for a lone read (``Database.lone_reads``).

    A session-cookie check is one SELECT, on every request: without BEGIN and COMMIT
    around it (on PostgreSQL one round trip instead of three).
    """
    open_session: AsyncSession | None = getattr(request.state, REQUEST_SESSION, None)
    if open_session is not None:
        yield open_session
        return
    async with database_of(request).lone_reads() as session:
        yield session


DatabaseDep = Annotated[Database, Depends(get_database)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
GatewayDep = Annotated[PaymentGateway, Depends(get_gateway)]
# ``NowDep`` is now: one reading of the app's clock (a datetime). A handler that reads the
# time more than once (a chat turn) takes the clock itself, ``api.chat.ClockDep``.
NowDep = Annotated[datetime, Depends(get_now)]
# scope="function": the transaction ends (commits) before the response is sent, not after.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise ApiError(401, "unauthenticated", "Use 'Authorization: Bearer <api key>'.")
    return value.strip()


async def _tiers_with(session: AsyncSession, feature: str) -> list[str]:
    tiers = (
        await session.execute(
            select(SubscriptionTier).where(SubscriptionTier.is_active.is_(True)).order_by(SubscriptionTier.sort_order)
        )
    ).scalars()
    return [t.name for t in tiers if t.has(feature)]


async def user_has_feature(session: AsyncSession, user_id: int, feature: str, *, now: datetime | None = None) -> bool:
    """Whether the user's current tier includes ``feature`` (an entitlement of the catalog).

    Pass ``now`` (the ``NowDep``) to apply a due monthly reset first, so that a plan
    that ended (cancelled, downgraded) no longer grants its features even if nobody
    has read the account since.
    """
    if now is not None:
        await billing.apply_due_reset(session, user_id=user_id, now=now)
    tier = (
        await session.execute(
            select(SubscriptionTier)
            .join(UserSubscription, UserSubscription.tier_id == SubscriptionTier.id)
            .where(UserSubscription.user_id == user_id)
        )
    ).scalar_one_or_none()
    return tier is not None and tier.has(feature)


async def feature_refusal(session: AsyncSession, feature: str) -> ApiError:
    """The contract's 403 ``feature_not_in_plan`` with the tiers that have ``feature``."""
    return ApiError(
        403,
        "feature_not_in_plan",
        f"Your plan does not include {feature.replace('_', ' ')}; upgrade to use it.",
        feature=feature,
        tiers=await _tiers_with(session, feature),
    )


async def _user_from_key(session: AsyncSession, secret: str, now: datetime) -> User:
    key = (
        await session.execute(
            select(ApiKey).where(ApiKey.key_hash == hash_api_key(secret), ApiKey.revoked_at.is_(None))
        )
    ).scalar_one_or_none()
    if key is None:
        raise ApiError(401, "unauthenticated", "This API key is not valid or has been revoked.")
    user = await session.get(User, key.user_id)
    if user is None:
        raise ApiError(401, "unauthenticated", "This API key is not valid or has been revoked.")
    if not await user_has_feature(session, user.id, API_ACCESS, now=now):
        raise await feature_refusal(session, API_ACCESS)
    # Recorded at most once a minute, so a busy script does not write on every call.
    if key.last_used_at is None or (now - key.last_used_at).total_seconds() >= 60:
        key.last_used_at = now
    return user


async def _user_from_cookie(request: Request, session: AsyncSession) -> User | None:
    raw = request.cookies.get(SESSION_COOKIE)
    if not raw:
        return None
    data = request.app.state.sessions.loads(raw)
    if data is None:
        return None
    # One read: the session's row (ended sessions have none) joined to its user.
    user = await sessions.user_by_session(session, data)
    if user is None or password_fingerprint(user.password_hash) != data.fingerprint:
        return None
    if request.method in UNSAFE_METHODS:
        header = request.headers.get(CSRF_HEADER)
        if not (tokens_match(header, data.csrf) and tokens_match(header, request.cookies.get(CSRF_COOKIE))):
            raise ApiError(403, "csrf_failed", "Missing or wrong X-CSRF-Token header (copy the csrf_token cookie).")
    setattr(request.state, sessions.REQUEST_SESSION, data)
    return user


async def authenticate(request: Request, db: Database, now: datetime) -> User | None:
    """The user behind a Bearer key or a session cookie, or None; raises on a bad key or CSRF.

    Runs in its own short transaction and returns a detached ``User``.
    """
    secret = _bearer(request)
    if secret:  # a key may record its use and apply a due reset: a real transaction
        async with request_transaction(request) as session:
            user: User | None = await _user_from_key(session, secret, now)
    else:
        async with request_reads(request) as session:
            user = await _user_from_cookie(request, session)
    if user is not None and user.is_suspended:
        raise ApiError(403, "forbidden", "This account is suspended.")
    if user is not None:
        request.state.user_id = user.id  # for the request log
    return user


async def get_optional_user(request: Request, db: DatabaseDep, now: NowDep) -> User | None:
    return await authenticate(request, db, now)


async def get_current_user(user: Annotated[User | None, Depends(get_optional_user)]) -> User:
    if user is None:
        raise ApiError(401, "unauthenticated", "Log in or send an API key.")
    return user


async def get_admin_user(user: Annotated[User, Depends(get_current_user)]) -> User:
    if not user.is_admin:
        raise ApiError(403, "forbidden", "This needs an administrator.")
    return user


OptionalUser = Annotated[User | None, Depends(get_optional_user)]
CurrentUser = Annotated[User, Depends(get_current_user)]
AdminUser = Annotated[User, Depends(get_admin_user)]


def require_feature(name: str) -> Any:
    """A dependency that refuses (403 ``feature_not_in_plan``) users whose plan lacks ``name``.

    Use as ``dependencies=[require_feature("advanced_analytics")]`` or as a parameter.
    """

    async def check(request: Request, user: CurrentUser, now: NowDep) -> User:
        async with request_transaction(request) as session:
            if not await user_has_feature(session, user.id, name, now=now):
                raise await feature_refusal(session, name)
        return user

    return Depends(check)


async def _idempotency_key(
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            description="Optional: a retry with the same key returns the first result and changes nothing.",
        ),
    ] = None,
) -> str | None:
    if idempotency_key is None:
        return None
    if not 1 <= len(idempotency_key) <= 255 or not idempotency_key.isprintable():
        raise ApiError(400, "invalid_request", "Idempotency-Key must be 1 to 255 printable characters.")
    return idempotency_key


IdempotencyKeyDep = Annotated[str | None, Depends(_idempotency_key)]


@dataclass(frozen=True, slots=True)
class PaymentContext:
    """Who pays and through what: what every endpoint that changes what an account pays needs.

    The personal routes (``/api/credits``, ``/api/subscription``, ``/api/stripe``) and a
    team's (``/api/orgs/{id}/...``) take it as one parameter and hand it to the same
    implementation, which reads ``request`` for the app's catalog and idempotency records.
    """

    request: Request
    user: User
    db: Database
    now: datetime
    gateway: PaymentGateway


async def get_payment_context(
    request: Request, user: CurrentUser, db: DatabaseDep, now: NowDep, gateway: GatewayDep
) -> PaymentContext:
    # A function, not the dataclass itself as the dependency: FastAPI would call a class in its thread pool.
    return PaymentContext(request=request, user=user, db=db, now=now, gateway=gateway)


PaymentDep = Annotated[PaymentContext, Depends(get_payment_context)]
