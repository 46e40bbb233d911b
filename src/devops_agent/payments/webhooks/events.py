"""Reading a Stripe event: its signature, its times and the ids of ours it carries.

A signed event with a field we cannot use raises ``MalformedEvent`` from here; the
router then records the event as rejected and changes nothing.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, cast

import stripe

Event = dict[str, Any]

# Stripe's times are Unix seconds; outside these years a value is not one of its events
# (and a far-future one would make every later event look older than it).
EARLIEST_TIME = 946_684_800  # 2000-01-01
LATEST_TIME = 4_102_444_800  # 2100-01-01
MAX_ROW_ID = 2**63 - 1


class InvalidSignature(Exception):
    """The payload is not signed with our webhook secret (or is too old); nothing changed."""

    code = "invalid_signature"


class MalformedEvent(Exception):
    """A signed event with a field we cannot use; nothing changed, the event is recorded as rejected."""

    code = "invalid_event"


def verify_event(payload: bytes, signature_header: str | None, secret: str | None, *, tolerance: int = 300) -> Event:
    """Check the ``Stripe-Signature`` header with the SDK and return the parsed event."""
    if not secret:
        raise InvalidSignature("Stripe webhooks are not configured (STRIPE_WEBHOOK_SECRET is empty).")
    try:
        stripe.WebhookSignature.verify_header(payload, signature_header, secret, tolerance)
    except stripe.SignatureVerificationError as exc:
        raise InvalidSignature(f"The Stripe signature does not verify: {exc.user_message or exc}") from None
    try:
        event = json.loads(payload)
    except ValueError:
        raise InvalidSignature("The signed payload is not JSON.") from None
    if not isinstance(event, dict) or not isinstance(event.get("id"), str) or not isinstance(event.get("type"), str):
        raise InvalidSignature("The signed payload is not a Stripe event.")
    return cast(Event, event)


def timestamp(epoch: Any) -> datetime:
    """A Stripe time (integer Unix seconds) as a datetime; ``MalformedEvent`` for anything else."""
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not EARLIEST_TIME <= epoch < LATEST_TIME:
        raise MalformedEvent(f"{shown(epoch)} is not a Stripe timestamp")
    return datetime.fromtimestamp(epoch, UTC)


def event_time(event: Event, now: datetime) -> datetime:
    """When Stripe created the event (``now`` when it does not say)."""
    created = event.get("created")
    return now if created is None else timestamp(created)


def row_id(raw: Any) -> int | None:
    """One of our row ids as Stripe carries it (metadata are strings).

    None when absent or not a decimal number (someone else's metadata: not ours to read);
    ``MalformedEvent`` for a number no row of ours can have.
    """
    if raw is None or isinstance(raw, bool):
        return None
    text = str(raw)
    if not (text.isascii() and text.isdigit()):
        return None
    if len(text) > len(str(MAX_ROW_ID)) or int(text) > MAX_ROW_ID:
        raise MalformedEvent(f"the id {shown(text)} is out of range")
    return int(text)


def shown(value: Any) -> str:
    """A value for a message, cut short: an event's fields can be arbitrarily long."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
