"""The one place that turns errors into the contract's JSON error bodies.

Every error leaves the service as ``{"error": "<code>", "message": "<text>"}`` plus
the extra fields the contract names, built by the schema that documents it
(``web.schemas``: ``ErrorOut``, and each 402's own). Every error raised on purpose is
a ``DomainError`` (``devops_agent.errors``) that declares its code and status: the
domain's (``billing.errors``, the agent's, ``PaymentProviderError``) and the web
layer's own ``ApiError``. One handler answers them all, so endpoints just let them
rise. Bad input never becomes a 500: malformed JSON and out-of-range query values are
400 ``invalid_request``, a body that fails its schema is 422 ``validation_error`` with
``details``.
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
from devops_agent.billing.errors import InsufficientCredits
from devops_agent.billing.models import SubscriptionTier
from devops_agent.db import DatabaseBusy, is_unavailable
from devops_agent.errors import DomainError
from devops_agent.web import messages
from devops_agent.web.schemas import PAYMENT_REQUIRED, ErrorOut, InsufficientCreditsOut, TierOut

log = logging.getLogger("devops_agent.web")


class ApiError(DomainError):
    """A web-level error (authentication, CSRF, rate limits, bad filters): its status and code per instance."""

    def __init__(
        self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(message, **extra)
        self.status = status
        self.code = code
        self.headers = headers


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


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    """The contract's error object, as ``ErrorOut`` documents it."""
    body = ErrorOut.model_validate({"error": code, "message": message, **extra})
    return body.model_dump(mode="json", exclude_unset=True)


def error_response(
    status_code: int, code: str, message: str, *, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    return JSONResponse(error_body(code, message, **extra), status_code=status_code, headers=headers)


async def _tier(request: Request, tier_id: int | None) -> TierOut | None:
    """The account's Tier for the 402 body (read in a short transaction of its own)."""
    if tier_id is None:
        return None
    async with request.app.state.db.transaction(write=False) as session:
        tier = await session.get(SubscriptionTier, tier_id)
        return TierOut.model_validate(tier) if tier is not None else None


async def payment_required_body(request: Request, exc: DomainError) -> dict[str, Any]:
    """A 402's body, built by the schema of its code (``web.schemas.PAYMENT_REQUIRED``)."""
    if isinstance(exc, InsufficientCredits):  # the seed's exact body: the balance and the account's tier
        out = InsufficientCreditsOut(
            error="insufficient_credits",
            message=exc.message,
            credits_remaining=exc.balance,
            tier=await _tier(request, exc.tier_id),
        )
        return out.model_dump(mode="json")
    schema = PAYMENT_REQUIRED.get(exc.code)
    if schema is None:  # pragma: no cover - a test checks that every 402 error has its schema
        return error_body(exc.code, exc.message, **exc.extra)
    return schema.model_validate({"error": exc.code, "message": exc.message, **exc.extra}).model_dump(mode="json")


async def domain_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """Any ``DomainError``: its status, its code's body, its headers (``Retry-After`` on a 429)."""
    assert isinstance(exc, DomainError)
    if exc.status == 402:
        metrics.PAYMENT_REQUIRED.labels(exc.code).inc()
        body = await payment_required_body(request, exc)
    else:
        body = error_body(exc.code, exc.message, **exc.extra)
    return JSONResponse(body, status_code=exc.status, headers=exc.headers)


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

    code = "validation_error"

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                response = await validation_error_handler(request, exc)
                if response.status_code != 422:
                    return response
                details = [_detail(e) for e in exc.errors()]
                return error_response(400, self.code, messages.summary(details), details=details)

        return run


class InvalidRequestOnInvalidBody(BadRequestOnInvalidBody):
    """A route whose contract answers every bad body with 400 ``invalid_request`` (with ``details``

    when it fails the schema), the same answer as for a value the domain refuses
    (``POST /api/admin/users/{id}/grants``: credits out of range, no reason, a past expiry).
    """

    code = "invalid_request"


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
    app.add_exception_handler(DomainError, domain_error_handler)  # billing, agent, payments, ApiError
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    for database_error in DATABASE_ERRORS:
        app.add_exception_handler(database_error, database_unavailable_handler)
    app.add_exception_handler(Exception, unhandled_error_handler)
