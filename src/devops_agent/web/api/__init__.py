"""The JSON API routers; each module exposes ``router``, registered in ``web.app.create_app``."""

from __future__ import annotations

from typing import Annotated, Any, Union, get_args

from fastapi import Query
from pydantic import BaseModel, Field

from devops_agent.web.schemas import ErrorOut, InsufficientCreditsOut, MemberCapReachedOut, SeatLimitReachedOut

# Paging of the history lists (a user's, a pool's): the same bounds everywhere.
PageLimit = Annotated[int, Query(ge=1, le=200)]
PageOffset = Annotated[int, Query(ge=0, le=2**31 - 1)]

_DESCRIPTIONS = {
    400: "Malformed or out-of-range value (`invalid_request`, or a domain code such as `invalid_pack_size`).",
    401: "Not logged in and no valid API key (`unauthenticated`).",
    403: "`csrf_failed`, `forbidden`, or `feature_not_in_plan` (with `feature` and `tiers`).",
    404: "Not found (`<thing>_not_found`).",
    409: "`already_exists` or `conflict` (e.g. an Idempotency-Key reused for another request).",
    410: "Gone (`action_expired`: a pending action left unanswered past its 15 minutes).",
    413: "Request body too large (`payload_too_large`).",
    422: "The body fails its schema (`validation_error`, with `details`).",
    429: "Too many attempts (`rate_limited`); see `Retry-After`.",
}

# The 402 bodies a route can answer, by what it charges (pass one as ``errors(payment=...)``).
OWN_CREDITS: tuple[type[BaseModel], ...] = (InsufficientCreditsOut,)
# A charge a team's pool may pay (``org_id``): the pool may be empty, or the member past their cap.
POOL_CREDITS: tuple[type[BaseModel], ...] = (InsufficientCreditsOut, MemberCapReachedOut)
SEATS: tuple[type[BaseModel], ...] = (SeatLimitReachedOut,)


def _code(schema: type[BaseModel]) -> str:
    """The ``error`` code a 402 schema pins (its ``Literal``)."""
    code: str = get_args(schema.model_fields["error"].annotation)[0]
    return code


def _payment_required(schemas: tuple[type[BaseModel], ...]) -> dict[str, Any]:
    """The 402 entry: one schema per code (``oneOf`` on ``error``), with an example of each."""
    model: Any = schemas[0]
    if len(schemas) > 1:
        model = Annotated[Union[schemas], Field(discriminator="error")]  # noqa: UP007 - a runtime tuple of types
    examples = {
        _code(schema): {"summary": schema.__doc__ or "", "value": schema.model_json_schema()["examples"][0]}
        for schema in schemas
    }
    codes = ", ".join(f"`{code}`" for code in examples)
    return {
        "model": model,
        "description": f"Payment required ({codes}); nothing was changed.",
        "content": {"application/json": {"examples": examples}},
    }


def errors(*statuses: int, payment: tuple[type[BaseModel], ...] = ()) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` entries documenting a route's error statuses with their error models.

    ``payment`` names the 402 bodies the route can answer (``OWN_CREDITS``,
    ``POOL_CREDITS``, ``SEATS``); a route that charges nothing has none.
    """
    if 402 in statuses:
        raise ValueError("name a route's 402 bodies with payment=, not the status")
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        out[status] = {"model": ErrorOut, "description": _DESCRIPTIONS.get(status, "Error.")}
        if status == 429:
            out[status]["headers"] = {
                "Retry-After": {
                    "description": "Seconds until another attempt is allowed.",
                    "schema": {"type": "integer"},
                }
            }
    if payment:
        out[402] = _payment_required(payment)
    return dict(sorted(out.items(), key=lambda item: int(item[0])))


# Errors any authenticated route can answer.
AUTHED = (400, 401, 403, 413, 422)
