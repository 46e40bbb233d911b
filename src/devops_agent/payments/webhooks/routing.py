"""One verified event to its handler, once: recorded in ``stripe_events`` in the transaction of its effect."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from devops_agent.db import Database

from ..models import StripeEvent
from ..stripe_client import field
from . import packs, plans
from .events import Event, MalformedEvent, event_time, shown
from .outcomes import Handled, WebhookOutcome, effect_of, effect_record

log = logging.getLogger("devops_agent.payments")

EVENT_ID_LENGTH = 255  # stripe_events.event_id
REJECTED = "rejected: "


async def handle_event(db: Database, event: Event, *, now: datetime) -> WebhookOutcome:
    """Apply one verified event, once: its id is recorded in the transaction of its effect.

    An event with a field we cannot use changes nothing and is recorded as rejected
    (``WebhookOutcome.rejected``), on its first delivery and on every later one.
    """
    event_id, event_type = str(event["id"]), str(event["type"])
    try:
        return await _apply_once(db, event, event_id, event_type, now)
    except MalformedEvent as exc:
        reason = str(exc)
    except DBAPIError as exc:
        if not _is_data_error(exc):
            raise
        reason = "a value does not fit our records"
    return await _reject(db, event_id, event_type, reason, now)


def _record_id(event_id: str) -> str:
    """The id an event is recorded under: its own, or a digest of one too long for the column."""
    if len(event_id) <= EVENT_ID_LENGTH:
        return event_id
    return "sha256:" + hashlib.sha256(event_id.encode()).hexdigest()


def _is_data_error(exc: DBAPIError) -> bool:
    """PostgreSQL refused a value (too long or out of range for its column: SQLSTATE class 22)."""
    sqlstate = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None) or ""
    return isinstance(exc, DataError) or str(sqlstate).startswith("22")


async def _reject(db: Database, event_id: str, event_type: str, reason: str, now: datetime) -> WebhookOutcome:
    """Record the event as rejected (its effect was rolled back with the failed transaction)."""
    outcome = REJECTED + reason
    log.warning("stripe event %s (%s) rejected: %s", shown(event_id), shown(event_type), reason)
    try:
        async with db.transaction() as session:
            session.add(
                StripeEvent(
                    event_id=_record_id(event_id),
                    type=event_type[:128],
                    outcome=outcome,
                    stripe_created_at=now,
                    processed_at=now,
                )
            )
    except IntegrityError:
        pass  # a concurrent delivery of the same event recorded it first
    return WebhookOutcome(event_id, event_type, outcome, rejected=True)


async def _apply_once(db: Database, event: Event, event_id: str, event_type: str, now: datetime) -> WebhookOutcome:
    async with db.transaction() as session:
        seen = await session.execute(
            select(StripeEvent.outcome, StripeEvent.effect).where(StripeEvent.event_id == _record_id(event_id))
        )
        previous = seen.first()
        if previous is not None:
            # Reported again: whatever reacts to it after the commit may not have run the first time.
            rejected = previous.outcome.startswith(REJECTED)
            effect = effect_of(previous.effect)
            return WebhookOutcome(
                event_id, event_type, previous.outcome, duplicate=True, rejected=rejected, effect=effect
            )
        if len(event_id) > EVENT_ID_LENGTH:
            raise MalformedEvent(f"the event id is longer than {EVENT_ID_LENGTH} characters")
        record = StripeEvent(
            event_id=event_id,
            type=event_type[:128],
            outcome="processing",
            stripe_created_at=event_time(event, now),
            processed_at=now,
        )
        try:
            async with session.begin_nested():
                session.add(record)
                await session.flush()
        except IntegrityError:
            # A concurrent delivery of the same event committed first.
            return WebhookOutcome(event_id, event_type, "already processed", duplicate=True)
        handler = HANDLERS.get(event_type)
        obj = field(event, "data", "object") or {}
        handled = await handler(session, obj, event, now) if handler else Handled("ignored: event type not handled")
        record.outcome = handled.outcome
        record.effect = effect_record(handled.effect)
        await session.flush()
    return WebhookOutcome(event_id, event_type, handled.outcome, effect=handled.effect)


async def _checkout_completed(session: AsyncSession, obj: Any, event: Event, now: datetime) -> Handled:
    """A Checkout session completed: a pack's payment or a plan's subscription, by its mode."""
    mode = field(obj, "mode")
    if mode == "subscription":
        return await plans.subscription_checkout_completed(session, obj, now)
    if mode != "payment":
        return Handled(f"ignored: checkout mode {mode}")
    return await packs.pack_checkout_completed(session, obj, event, now)


Handler = Callable[[AsyncSession, Any, Event, datetime], Awaitable[Handled]]
HANDLERS: dict[str, Handler] = {
    "checkout.session.completed": _checkout_completed,
    "checkout.session.async_payment_succeeded": _checkout_completed,
    "checkout.session.async_payment_failed": packs.checkout_failed,
    "checkout.session.expired": packs.checkout_failed,
    "payment_intent.succeeded": packs.payment_intent_succeeded,
    "payment_intent.payment_failed": packs.payment_intent_failed,
    "charge.refunded": packs.claw_back,
    "charge.dispute.created": packs.claw_back,
    "invoice.paid": plans.invoice_paid,
    "invoice.payment_failed": plans.invoice_payment_failed,
    "customer.subscription.created": plans.subscription_changed,
    "customer.subscription.updated": plans.subscription_changed,
    "customer.subscription.deleted": plans.subscription_changed,
}
