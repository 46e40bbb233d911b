"""The one place that turns errors into the contract's JSON error bodies.

Every error leaves the service as ``{"error": "<code>", "message": "<text>"}`` plus
the extra fields the contract names. Domain errors of the credits engine
(``billing.errors``) are mapped here by class, so endpoints just let them rise;
web-level errors are raised as ``ApiError``. Bad input never becomes a 500:
malformed JSON and out-of-range query values are 400 ``invalid_request``, a body
that fails its schema is 422 ``validation_error`` with ``details``.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Coroutine
from typing import Any

import asyncpg
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from sqlalchemy import exc as sqlalchemy_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

from devops_agent import metrics
from devops_agent.billing import errors as billing_errors
from devops_agent.billing.models import SubscriptionTier
from devops_agent.db import DatabaseBusy, is_unavailable
from devops_agent.payments.stripe_client import PaymentProviderError
from devops_agent.web import messages

log = logging.getLogger("devops_agent.web")


class ApiError(Exception):
    """A web-level error with its HTTP status, contract code, message and extra fields."""

    def __init__(
        self, status_code: int, code: str, message: str, *, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.headers = headers
        self.extra = extra


# Domain error class -> HTTP status. The code comes from the class itself (``.code``).
BILLING_STATUS: dict[type[billing_errors.BillingError], int] = {
    billing_errors.InsufficientCredits: 402,
    billing_errors.AccountNotFound: 404,
    billing_errors.TierNotFound: 404,
    billing_errors.AlreadyOnTier: 400,
    billing_errors.InvalidPackSize: 400,
    billing_errors.PurchaseNotFound: 404,
    billing_errors.InvalidAmount: 400,
    billing_errors.ChargeNotFound: 404,
    billing_errors.MemberCapReached: 402,
    billing_errors.SeatLimitReached: 402,
    billing_errors.OrganizationNotFound: 404,
    billing_errors.OrgForbidden: 403,
    billing_errors.MemberNotFound: 404,
    billing_errors.AlreadyMember: 409,
    billing_errors.OwnerRequired: 409,
    billing_errors.OrganizationLimit: 409,
    billing_errors.InvitationNotFound: 404,
    billing_errors.InvitationExpired: 410,
    billing_errors.InvitationUsed: 409,
    billing_errors.InvitationWrongUser: 403,
    PaymentProviderError: 502,
}

HTTP_CODES = {
    400: "invalid_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


def status_for(exc: billing_errors.BillingError) -> int:
    """The HTTP status of a domain error: its class's, else the nearest base class's, else 400."""
    for cls in type(exc).__mro__:
        if cls in BILLING_STATUS:
            return BILLING_STATUS[cls]
    return 400


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    """The contract's error object."""
    return {"error": code, "message": message, **extra}


def error_response(
    status_code: int, code: str, message: str, *, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    return JSONResponse(error_body(code, message, **extra), status_code=status_code, headers=headers)


async def _tier_payload(request: Request, tier_id: int | None) -> dict[str, Any] | None:
    """The Tier object for the 402 body (read in a short transaction of its own)."""
    from devops_agent.web.schemas import tier_out  # local: schemas imports nothing from here, keep it so

    if tier_id is None:
        return None
    async with request.app.state.db.transaction(write=False) as session:
        tier = await session.get(SubscriptionTier, tier_id)
        return tier_out(tier).model_dump(mode="json") if tier is not None else None


async def billing_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, billing_errors.BillingError)
    if status_for(exc) == 402:
        metrics.PAYMENT_REQUIRED.labels(exc.code).inc()
    if isinstance(exc, billing_errors.InsufficientCredits):
        return error_response(
            402,
            exc.code,
            exc.MESSAGE,
            credits_remaining=exc.balance,
            tier=await _tier_payload(request, exc.tier_id),
        )
    return error_response(status_for(exc), exc.code, exc.message, **exc.extra)


async def api_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    if exc.status_code == 402:
        metrics.PAYMENT_REQUIRED.labels(exc.code).inc()
    return error_response(exc.status_code, exc.code, exc.message, headers=exc.headers, **exc.extra)


def _detail(error: Any) -> dict[str, Any]:
    """One failed field: a sentence for people (``message``), the rest for programs."""
    loc = [str(part) for part in error.get("loc", ())]
    field = ".".join(loc[1:]) or (loc[0] if loc else "")
    error_type = str(error.get("type", ""))
    ctx = error.get("ctx")
    detail: dict[str, Any] = {
        "field": field,
        "location": loc[0] if loc else "",
        "message": messages.sentence(error_type, field.split(".")[-1], ctx, str(error.get("msg", ""))),
        "type": error_type,
    }
    if constraint := messages.machine_ctx(ctx):
        detail["ctx"] = constraint
    return detail


async def validation_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    """Malformed JSON, a body that is not an object, or a bad query/path/header value: 400

    ``invalid_request``; an object whose fields fail the schema: 422 ``validation_error``.
    """
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    details = [_detail(e) for e in errors]
    if any(e.get("type") == "json_invalid" for e in errors):
        return error_response(400, "invalid_request", "The request body is not valid JSON.", details=details)
    if any(tuple(e.get("loc", ())) == ("body",) for e in errors):
        return error_response(400, "invalid_request", "The request body must be a JSON object.", details=details)
    if errors and all(d["location"] in ("query", "path", "header", "cookie") for d in details):
        return error_response(400, "invalid_request", messages.summary(details), details=details)
    return error_response(422, "validation_error", messages.summary(details), details=details)


class BadRequestOnInvalidBody(APIRoute):
    """A route whose contract answers a body that fails its schema with 400 ``validation_error``, not 422.

    Some endpoints answer 400 by contract (``POST /api/account/password``); the body is
    the same ``validation_error`` with ``details`` as everywhere else.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                response = await validation_error_handler(request, exc)
                if response.status_code == 422:
                    response.status_code = 400
                return response

        return run


async def http_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own errors (404 route not found, 405 method not allowed) as contract JSON."""
    assert isinstance(exc, StarletteHTTPException)
    code = HTTP_CODES.get(exc.status_code, "error")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    if exc.status_code == 404:
        message = "No such endpoint."
    elif exc.status_code == 405:
        message = "This endpoint does not accept that method."
    return error_response(exc.status_code, code, message, headers=getattr(exc, "headers", None))


# Every class an infrastructure fault of the database can arrive as; ``is_unavailable``
# then tells the faults (503) from the bugs (500) among them.
DATABASE_ERRORS: tuple[type[Exception], ...] = (
    sqlalchemy_exc.SQLAlchemyError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    sqlite3.Error,
    DatabaseBusy,
    ConnectionError,
    TimeoutError,
)


async def database_unavailable_handler(request: Request, exc: Exception) -> Response:
    """The database is out of reach for now: 503 with Retry-After, to send again.

    A connection lost or refused (a restart, a failover), the pool exhausted, a lock
    held by another process: nothing was changed (the request's transaction never
    committed). Any other database error is a bug and goes to the 500 handler.
    """
    if not is_unavailable(exc):
        fallback = request.app.exception_handlers.get(Exception, unhandled_error_handler)
        response: Response = await fallback(request, exc)
        return response
    log.warning("unavailable: %s: %s", type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
    if isinstance(exc, DatabaseBusy):
        return error_response(
            503,
            "database_busy",
            "The database is busy with maintenance; please retry in a moment.",
            headers={"Retry-After": "2"},
        )
    return error_response(
        503,
        "service_unavailable",
        "The service is busy; please retry in a moment.",
        headers={"Retry-After": "1"},
    )


async def unhandled_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    """A bug: log it with its traceback, answer a JSON 500 without internals."""
    log.error("unhandled error", exc_info=exc)
    return error_response(500, "internal_error", "Something went wrong on our side.")


def install_error_handlers(app: FastAPI) -> None:
    """Register every handler above on ``app``."""
    app.add_exception_handler(billing_errors.BillingError, billing_error_handler)
    app.add_exception_handler(ApiError, api_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    for database_error in DATABASE_ERRORS:
        app.add_exception_handler(database_error, database_unavailable_handler)
    app.add_exception_handler(Exception, unhandled_error_handler)
