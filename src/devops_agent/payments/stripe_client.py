"""The one place that builds a ``stripe.StripeClient`` and names its idempotency keys.

Every call to Stripe goes through a client made here, so that

* ``STRIPE_API_BASE`` can point the SDK at a local server (tests, localstripe);
* the async HTTP client is httpx (already a dependency), used from our event loop;
* every create call carries an idempotency key WE derive from our own row ids
  (``idempotency_key(...)``): a retry after a timeout finds Stripe's first answer
  instead of making a second customer, session or charge.

Stripe objects come back as ``StripeObject`` (a dict subclass); the helpers at the
end read the few fields we need in a way that works on both the current API shape
and the older one (localstripe), e.g. an invoice's subscription and price.
"""

from __future__ import annotations

from typing import Any

import stripe

from devops_agent.config import Settings
from devops_agent.errors import DomainError

IDEMPOTENCY_PREFIX = "devops-agent"
# The ``metadata.kind`` of the subscription that bills an organization's extra seats
# (beside its plan's subscription; the webhooks leave its events to Stripe's billing).
SEATS_KIND = "seats"


class PaymentProviderError(DomainError):
    """Stripe refused or could not be reached; nothing was charged on our side (502)."""

    code = "payment_provider_error"
    status = 502


def make_client(settings: Settings) -> stripe.StripeClient:
    """A StripeClient for these settings (``STRIPE_API_BASE`` overrides api.stripe.com)."""
    if not settings.stripe_secret_key:
        raise PaymentProviderError("Stripe is not configured (STRIPE_SECRET_KEY is empty)")
    base: dict[str, str] = {}
    if settings.stripe_api_base:
        base = {"api": settings.stripe_api_base.rstrip("/")}
    return stripe.StripeClient(
        settings.stripe_secret_key,
        base_addresses=base,  # type: ignore[arg-type]
        http_client=stripe.HTTPXClient(timeout=15),
        max_network_retries=2,
    )


def idempotency_key(*parts: object) -> str:
    """Our idempotency key for one create call, derived from our own ids (stable across retries)."""
    return ":".join([IDEMPOTENCY_PREFIX, *(str(p) for p in parts)])


def options(*parts: object) -> dict[str, Any]:
    """Request options carrying the idempotency key for ``parts``."""
    return {"idempotency_key": idempotency_key(*parts)}


def field(obj: Any, *path: str | int) -> Any:
    """``obj[path[0]][path[1]]...`` or None when any step is missing (Stripe objects are dicts)."""
    current = obj
    for key in path:
        if current is None:
            return None
        try:
            current = current[key]
        except (KeyError, TypeError, IndexError):
            return None
    return current


def object_id(value: Any) -> str | None:
    """The id of an expandable field: a plain id string, or an expanded object's ``id``."""
    if value is None or isinstance(value, str):
        return value
    found = field(value, "id")
    return str(found) if found is not None else None


def invoice_subscription_id(invoice: Any) -> str | None:
    """The subscription an invoice bills (``parent.subscription_details`` now, ``subscription`` before)."""
    return object_id(field(invoice, "parent", "subscription_details", "subscription")) or object_id(
        field(invoice, "subscription")
    )


def line_price_id(line: Any) -> str | None:
    """The price of an invoice line or subscription item, whichever API shape it comes in."""
    return (
        object_id(field(line, "pricing", "price_details", "price"))
        or object_id(field(line, "price"))
        or object_id(field(line, "plan"))
    )


def line_is_proration(line: Any) -> bool:
    """Whether an invoice line is a proration (current and older API shapes)."""
    if field(line, "proration") is True:
        return True
    return bool(field(line, "parent", "subscription_item_details", "proration"))


def subscription_price_id(subscription: Any) -> str | None:
    """The price of a one-item subscription."""
    items = field(subscription, "items", "data") or []
    return line_price_id(items[0]) if items else None
