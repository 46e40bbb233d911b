"""Stripe webhook events: verified, applied once, in any order; what each did, said once.

How an event takes effect exactly once: its id is inserted into ``stripe_events``
(unique) at the start of the same transaction that applies its effect. A second
delivery finds the row and does nothing; two deliveries racing each other both try
the insert, and the database lets one through (PostgreSQL makes the other wait on
the unique index until the first commits, then refuses it; SQLite writers are
serialised already). If applying fails, the whole transaction, event row included,
rolls back, and Stripe's retry gets another chance.

How order stops mattering:

* packs are granted and clawed back by the engine's idempotent, row-locked calls;
* a paid invoice starts a period only forward (``credits.start_paid_period``);
* subscription state is applied only from an event newer than the last one applied
  to that subscription (``stripe_subscriptions.last_event_at``), and a deleted
  subscription stays deleted.

A correctly signed event can still carry a field we cannot use (a ``created`` that is
not a Unix time, an id of ours too large for any row, a value too long for its column).
It is rejected: nothing it would change is changed, it is recorded in ``stripe_events``
with the outcome ``rejected: <why>`` so an operator sees it, and the endpoint answers
400 ``invalid_event`` to it and to every redelivery (answering 500 would have Stripe
retry it for days to the same end).

Whose account an event is for: a user's own or an organization's pool (``Owner``).
Our metadata names it (``org_id`` first, then ``user_id``), else the Stripe customer
or subscription we recorded for the account; packs know it from their purchase row.

The payload is read here and only here: ``handle_event`` returns a ``WebhookOutcome``
whose ``effect`` (a pack paid, a plan period paid, a payment failed, a pack refunded)
carries the ids and amounts that whoever reacts after the commit needs (the endpoint
queues the emails). Nothing here calls Stripe: everything an event needs is in its payload.

Modules: ``events`` reads a verified event, ``routing`` applies it once and records it,
``accounts`` finds whose account it is for, ``packs`` and ``plans`` are the handlers of
one-off payments and of subscriptions, ``outcomes`` says what happened.
"""

from __future__ import annotations

from .accounts import Owner
from .events import Event, InvalidSignature, MalformedEvent, verify_event
from .outcomes import Effect, PackPaid, PackRefunded, PaymentFailed, PlanEnded, PlanRenewed, WebhookOutcome
from .routing import HANDLERS, handle_event

__all__ = [
    "HANDLERS",
    "Effect",
    "Event",
    "InvalidSignature",
    "MalformedEvent",
    "Owner",
    "PackPaid",
    "PackRefunded",
    "PaymentFailed",
    "PlanEnded",
    "PlanRenewed",
    "WebhookOutcome",
    "handle_event",
    "verify_event",
]
