"""The JSON API routers; each module exposes ``router``, registered in ``web.app.create_app``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query

from devops_agent.web.schemas import ErrorOut, InsufficientCreditsOut

# Paging of the history lists (a user's, a pool's): the same bounds everywhere.
PageLimit = Annotated[int, Query(ge=1, le=200)]
PageOffset = Annotated[int, Query(ge=0, le=2**31 - 1)]

_DESCRIPTIONS = {
    400: "Malformed or out-of-range value (`invalid_request`, or a domain code such as `invalid_pack_size`).",
    401: "Not logged in and no valid API key (`unauthenticated`).",
    402: "Not enough credits (`insufficient_credits`).",
    403: "`csrf_failed`, `forbidden`, or `feature_not_in_plan` (with `feature` and `tiers`).",
    404: "Not found (`<thing>_not_found`).",
    409: "`already_exists` or `conflict` (e.g. an Idempotency-Key reused for another request).",
    410: "Gone (`action_expired`: a pending action left unanswered past its 15 minutes).",
    413: "Request body too large (`payload_too_large`).",
    422: "The body fails its schema (`validation_error`, with `details`).",
    429: "Too many attempts (`rate_limited`); see `Retry-After`.",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` entries documenting a route's error statuses with the error model."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        model: Any = ErrorOut
        if code == 402:
            model = InsufficientCreditsOut
        out[code] = {"model": model, "description": _DESCRIPTIONS.get(code, "Error.")}
        if code == 429:
            out[code]["headers"] = {
                "Retry-After": {
                    "description": "Seconds until another attempt is allowed.",
                    "schema": {"type": "integer"},
                }
            }
    return out


# Errors any authenticated route can answer.
AUTHED = (400, 401, 403, 413, 422)
