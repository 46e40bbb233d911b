"""Email and alerts: low-credit warnings, receipts, payment failures, invitations.

Other layers call the ``after_*`` functions AFTER their transaction has
committed; each queues what is due in the outbox and returns without waiting for
SMTP. They never raise: an email that cannot be queued is logged, and the change
that caused it stands. See ``service`` for how each email is sent at most once.
"""

from __future__ import annotations

import logging
from datetime import datetime
from decimal import Decimal
from weakref import WeakKeyDictionary

from devops_agent.config import get_settings
from devops_agent.db import Database

from .invitations import queue_invitation, void_invitation_emails
from .models import Cause, EmailOutbox, OutboxStatus
from .service import DrainReport, Notifier, recent_outbox

logger = logging.getLogger("devops_agent.notifications")
_notifiers: WeakKeyDictionary[Database, Notifier] = WeakKeyDictionary()


def notifier_for(db: Database) -> Notifier:
    """The process's notifier for ``db`` (made from the settings on first use)."""
    notifier = _notifiers.get(db)
    if notifier is None:
        notifier = _notifiers[db] = Notifier.from_settings(db, get_settings())
    return notifier


def install(db: Database, notifier: Notifier) -> Notifier:
    """Use ``notifier`` for ``db`` (the app at startup, tests with their own SMTP server)."""
    _notifiers[db] = notifier
    return notifier


def forget(db: Database) -> None:
    """Drop the notifier installed for ``db`` (a test that installed its own cleans up)."""
    _notifiers.pop(db, None)


async def after_balance_change(db: Database, *, user_id: int, now: datetime, balance: int | None = None) -> None:
    """Call after a transaction that spent or took credits committed (with the balance it left, if known)."""
    try:
        await notifier_for(db).after_balance_change(user_id=user_id, now=now, balance=balance)
    except Exception:
        logger.exception("could not queue the low-credit email of user %s", user_id)


async def after_pool_change(db: Database, *, org_id: int, now: datetime, balance: int | None = None) -> None:
    """Call after a transaction that spent a team pool's credits committed (the owner is warned)."""
    try:
        await notifier_for(db).after_pool_change(org_id=org_id, now=now, balance=balance)
    except Exception:
        logger.exception("could not queue the low-credit email of organization %s", org_id)


async def after_purchase(db: Database, *, purchase_id: int, now: datetime) -> None:
    """Call after ``billing.grant_purchase`` committed: queues the receipt."""
    try:
        await notifier_for(db).after_purchase(purchase_id=purchase_id, now=now)
    except Exception:
        logger.exception("could not queue the receipt of purchase %s", purchase_id)


async def after_payment_failed(
    db: Database,
    *,
    user_id: int | None,
    now: datetime,
    reference: str,
    amount: Decimal | None = None,
    org_id: int | None = None,
) -> None:
    """Call when Stripe reports a failed payment (``reference``: the invoice id); a pool's goes to its owner."""
    try:
        await notifier_for(db).after_payment_failed(
            user_id=user_id, org_id=org_id, now=now, reference=reference, amount=amount
        )
    except Exception:
        whose = f"organization {org_id}" if org_id is not None else f"user {user_id}"
        logger.exception("could not queue the payment-failed email of %s", whose)


async def after_invitation(db: Database, *, invitation_id: int, token: str, now: datetime) -> None:
    """Call after an invitation (or its new token) committed, with the clear token held in memory."""
    try:
        await queue_invitation(notifier_for(db), invitation_id=invitation_id, token=token, now=now)
    except Exception:
        logger.exception("could not queue the email of invitation %s", invitation_id)


async def after_invitation_revoked(db: Database, *, invitation_id: int) -> None:
    """Call after an invitation's revocation committed: its email, if still waiting, is not sent."""
    try:
        await void_invitation_emails(notifier_for(db), invitation_id=invitation_id)
    except Exception:
        logger.exception("could not void the email of invitation %s", invitation_id)


__all__ = [
    "Cause",
    "DrainReport",
    "EmailOutbox",
    "Notifier",
    "OutboxStatus",
    "after_balance_change",
    "after_invitation",
    "after_invitation_revoked",
    "after_pool_change",
    "after_payment_failed",
    "after_purchase",
    "forget",
    "install",
    "notifier_for",
    "recent_outbox",
]
