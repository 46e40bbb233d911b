"""What a Stripe event did: the sentence recorded for it, and its effect on money.

``handle_event`` returns a ``WebhookOutcome``. Its ``effect``, when the event moved
money or failed to, carries the ids and amounts that whoever reacts after the commit
needs (the webhook endpoint queues a receipt or a failed-payment email from it), so
nobody reads the event's payload a second time. The effect is kept with the event
(``effect_record``), and a redelivery reports it again: the process may have died
between the first delivery's commit and what it was to trigger, and what it triggers
is idempotent. A rejected event has no effect: it changed nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import cache
from typing import Any, Literal

from pydantic import TypeAdapter

from .accounts import Owner


@dataclass(frozen=True)
class PackPaid:
    """A credit pack's payment cleared and its credits are in its account (granted by this event or before)."""

    purchase_id: int
    credits: int


@dataclass(frozen=True)
class PlanRenewed:
    """A paid invoice started a period of a plan (the first one or a renewal) and its monthly credits."""

    owner: Owner
    tier: str
    period_start: datetime
    period_end: datetime


@dataclass(frozen=True)
class PlanEnded:
    """A plan's subscription ended in Stripe: the account is on Free (if that subscription paid for it)."""

    owner: Owner


@dataclass(frozen=True)
class PaymentFailed:
    """Stripe could not collect an invoice from an account we know.

    Reported whether or not the failure changed the plan's state (an invoice older than
    the state applied, or one of the same customer's that another subscription or no
    subscription bills): the account's owner hears of every failed payment.
    """

    owner: Owner
    invoice_id: str
    amount_due: Decimal | None  # dollars; None when the invoice does not say


@dataclass(frozen=True)
class PackRefunded:
    """A granted pack's payment was refunded in full or disputed, and its credits taken back."""

    purchase_id: int
    reason: Literal["refunded", "disputed"]
    shortfall: int  # credits already spent, which could not be taken back


Effect = PackPaid | PlanRenewed | PlanEnded | PaymentFailed | PackRefunded
_EFFECTS: dict[str, type[Effect]] = {
    kind.__name__: kind for kind in (PackPaid, PlanRenewed, PlanEnded, PaymentFailed, PackRefunded)
}


@cache
def _adapter(kind: str) -> TypeAdapter[Effect]:
    """Pydantic's (de)serializer of one kind of effect (by its name), built once per process."""
    return TypeAdapter(_EFFECTS[kind])


def effect_record(effect: Effect | None) -> dict[str, Any] | None:
    """An effect as JSON, to keep with its event (``StripeEvent.effect``)."""
    if effect is None:
        return None
    return {"kind": type(effect).__name__, "value": _adapter(type(effect).__name__).dump_python(effect, mode="json")}


def effect_of(record: dict[str, Any] | None) -> Effect | None:
    """The effect kept with an event (None for events recorded without one)."""
    if not record:
        return None
    return _adapter(record["kind"]).validate_python(record["value"])


@dataclass(frozen=True)
class Handled:
    """What one handler did: the sentence recorded for the event, and its effect if it had one."""

    outcome: str
    effect: Effect | None = None


@dataclass(frozen=True)
class WebhookOutcome:
    """One delivery of an event: the recorded sentence, whether it was a redelivery or rejected, its effect."""

    event_id: str
    type: str
    outcome: str
    duplicate: bool = False
    rejected: bool = False
    effect: Effect | None = None


def dollars(cents: object) -> Decimal | None:
    """A Stripe amount (integer cents) in dollars; None for anything else."""
    if isinstance(cents, bool) or not isinstance(cents, int):
        return None
    return (Decimal(cents) / 100).quantize(Decimal("0.01"))
