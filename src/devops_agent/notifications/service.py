"""Deciding which emails to send (after a commit) and delivering them (in the background).

Two halves, with the outbox table between them:

* **Triggers** (``after_balance_change``, ``after_pool_change``, ``after_purchase``,
  ``after_payment_failed``)
  are called by the web and agent layers AFTER their own transaction committed, so an
  email never announces a change that was rolled back. Each opens one short
  transaction that inserts outbox rows with ``ON CONFLICT DO NOTHING`` on the unique
  ``(user, cause, period)`` key: of any number of concurrent charges that cross the
  threshold, on any number of workers, exactly one inserts the row. Then it schedules
  delivery and returns; the request never waits for SMTP.
* **Delivery** (``drain``) claims due rows (``FOR UPDATE SKIP LOCKED`` on PostgreSQL,
  so two workers never claim the same row; SQLite writers are serialised anyway),
  sends each outside any transaction, retrying temporary SMTP failures at once with
  tenacity and later with a growing delay, and records the outcome. Without
  ``SMTP_URL`` the email is written to the log and stays in the outbox as ``logged``.

The credits engine does not import this package: it stays unaware of email.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from devops_agent.billing.models import (
    CreditPurchase,
    PurchaseStatus,
    SubscriptionTier,
    User,
    UserSubscription,
)
from devops_agent.billing.org_models import MemberRole, Organization, OrganizationMember
from devops_agent.billing.periods import Clock, utcnow
from devops_agent.config import Settings
from devops_agent.db import Database

from . import emails
from .models import Cause, EmailOutbox, OutboxStatus
from .sealing import Sealer, Unsealable
from .smtp import SmtpConfig, is_transient, parse_smtp_url, send

logger = logging.getLogger("devops_agent.notifications")


@dataclass(frozen=True)
class Claimed:
    """An outbox row claimed for delivery (a plain snapshot: no session is held while sending)."""

    id: int
    to_address: str
    subject: str
    body: str
    attempts: int
    claimed_at: datetime
    sealed_token: str | None = None  # an invitation's token, opened only to send


@dataclass
class DrainReport:
    sent: int = 0
    logged: int = 0
    retry_later: int = 0
    failed: int = 0


class Notifier:
    """The email side of one process: triggers, the outbox dispatcher and its background task."""

    def __init__(
        self,
        db: Database,
        *,
        smtp_url: str | None,
        sender: str,
        base_url: str,
        threshold: int = 5,
        clock: Clock = utcnow,
        smtp_attempts: int = 3,
        smtp_backoff: float = 1.0,
        max_deliveries: int = 5,
        retry_after: timedelta = timedelta(minutes=5),
        lease: timedelta = timedelta(minutes=5),
        secret: str | None = None,
    ) -> None:
        self.db = db
        self.sealer = Sealer(secret)
        self.smtp: SmtpConfig | None = parse_smtp_url(smtp_url) if smtp_url else None
        self.sender = sender
        self.base_url = base_url.rstrip("/")
        self.threshold = threshold
        self.clock = clock
        self.smtp_attempts = smtp_attempts
        self.smtp_backoff = smtp_backoff
        self.max_deliveries = max_deliveries
        self.retry_after = retry_after
        self.lease = lease
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self._periodic: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(cls, db: Database, settings: Settings, **overrides: Any) -> Notifier:
        options: dict[str, Any] = {
            "smtp_url": settings.smtp_url,
            "sender": settings.email_from,
            "base_url": settings.public_base_url,
            "threshold": settings.low_credit_threshold,
            "secret": settings.secret_key,
        }
        options.update(overrides)
        return cls(db, **options)

    # --- triggers -----------------------------------------------------------------------

    async def after_balance_change(self, *, user_id: int, now: datetime, balance: int | None = None) -> list[int]:
        """Queue the low-credit or out-of-credits email if this change earned one; return new outbox ids.

        ``balance``: the balance the change left, when the caller knows it; at or above the
        threshold nothing is due and no transaction is opened (most chats).
        """
        if balance is not None and balance >= self.threshold:
            return []
        async with self.db.transaction() as session:
            row = (
                await session.execute(
                    select(User, UserSubscription)
                    .join(UserSubscription, UserSubscription.user_id == User.id)
                    .where(User.id == user_id)
                )
            ).first()
            if row is None:
                return []
            user, account = row
            balance = account.balance
            if balance >= self.threshold or user.email_opt_out:
                return []
            period = account.current_period_start.isoformat()
            low = emails.low_balance(
                username=user.username, balance=balance, period_end=account.current_period_end, base_url=self.base_url
            )
            zero = emails.credits_exhausted(
                username=user.username, period_end=account.current_period_end, base_url=self.base_url
            )
            queued = await self._enqueue_low(
                session, user, balance, period, (Cause.LOW_BALANCE, low), (Cause.CREDITS_EXHAUSTED, zero), now
            )
        return self._queued(queued)

    async def after_pool_change(self, *, org_id: int, now: datetime, balance: int | None = None) -> list[int]:
        """Queue the team pool's low or empty email to the organization's owner, once per period.

        ``balance``: as for ``after_balance_change``.
        """
        if balance is not None and balance >= self.threshold:
            return []
        async with self.db.transaction() as session:
            row = (
                await session.execute(
                    select(Organization, UserSubscription, User)
                    .join(UserSubscription, UserSubscription.organization_id == Organization.id)
                    .join(OrganizationMember, OrganizationMember.organization_id == Organization.id)
                    .join(User, User.id == OrganizationMember.user_id)
                    .where(Organization.id == org_id, OrganizationMember.role == MemberRole.OWNER)
                )
            ).first()
            if row is None:
                return []
            org, account, owner = row
            balance = account.balance
            if balance >= self.threshold or owner.email_opt_out:
                return []
            period = f"org{org.id}:{account.current_period_start.isoformat()}"
            link = f"{self.base_url}/orgs/{org.id}"
            end = account.current_period_end
            low = emails.pool_low(
                username=owner.username,
                org_name=org.name,
                balance=balance,
                period_end=end,
                link=link,
                base_url=self.base_url,
            )
            zero = emails.pool_exhausted(
                username=owner.username, org_name=org.name, period_end=end, link=link, base_url=self.base_url
            )
            queued = await self._enqueue_low(
                session, owner, balance, period, (Cause.POOL_LOW, low), (Cause.POOL_EXHAUSTED, zero), now
            )
        return self._queued(queued)

    async def _enqueue_low(
        self,
        session: AsyncSession,
        user: User,
        balance: int,
        period: str,
        low: tuple[Cause, emails.Draft],
        zero: tuple[Cause, emails.Draft],
        now: datetime,
    ) -> list[int]:
        """The low email, or at zero the empty one (and the low one recorded as skipped)."""
        if balance == 0:
            queued = await self._enqueue(session, user, zero[0], period, zero[1], now)
            # Recorded but not sent: a "low" email after the "zero" one of the same period would only confuse.
            await self._enqueue(session, user, low[0], period, low[1], now, status=OutboxStatus.SKIPPED)
        else:
            queued = await self._enqueue(session, user, low[0], period, low[1], now)
        return [queued] if queued else []

    async def after_purchase(self, *, purchase_id: int, now: datetime) -> list[int]:
        """Queue the receipt of a completed pack purchase (once per purchase)."""
        async with self.db.transaction() as session:
            purchase = await session.get(CreditPurchase, purchase_id)
            if purchase is None or purchase.payment_status != PurchaseStatus.COMPLETED or purchase.completed_at is None:
                return []
            user = await session.get(User, purchase.user_id)
            if user is None:
                return []
            # The balance the pack went to: the buyer's own, or the organization's pool.
            paid_into = (
                UserSubscription.organization_id == purchase.organization_id
                if purchase.organization_id is not None
                else UserSubscription.user_id == user.id
            )
            account = (await session.execute(select(UserSubscription).where(paid_into))).scalar_one_or_none()
            draft = emails.purchase_receipt(
                username=user.username,
                purchase_id=purchase.id,
                credits=purchase.credits_amount,
                price=purchase.price_paid,
                completed_at=purchase.completed_at,
                balance=account.balance if account else purchase.credits_amount,
                base_url=self.base_url,
            )
            key = f"purchase:{purchase.id}"
            outbox_id = await self._enqueue(session, user, Cause.PURCHASE_RECEIPT, key, draft, now)
        return self._queued([outbox_id] if outbox_id else [])

    async def after_payment_failed(
        self,
        *,
        user_id: int | None,
        now: datetime,
        reference: str,
        amount: Decimal | None = None,
        org_id: int | None = None,
    ) -> list[int]:
        """Queue the payment-failed email, once per failed payment (``reference``: the invoice id).

        With ``org_id`` the failed payment is a team pool's plan: the email goes to its owner.
        """
        query: Any  # (user, tier name) or, for a pool, (owner, tier name, organization name)
        async with self.db.transaction() as session:
            if org_id is None:
                query = (
                    select(User, SubscriptionTier.display_name)
                    .join(UserSubscription, UserSubscription.user_id == User.id)
                    .join(SubscriptionTier, SubscriptionTier.id == UserSubscription.tier_id)
                    .where(User.id == user_id)
                )
            else:
                query = (
                    select(User, SubscriptionTier.display_name, Organization.name)
                    .join(OrganizationMember, OrganizationMember.user_id == User.id)
                    .join(Organization, Organization.id == OrganizationMember.organization_id)
                    .join(UserSubscription, UserSubscription.organization_id == Organization.id)
                    .join(SubscriptionTier, SubscriptionTier.id == UserSubscription.tier_id)
                    .where(Organization.id == org_id, OrganizationMember.role == MemberRole.OWNER.value)
                )
            row = (await session.execute(query)).first()
            if row is None:
                return []
            user, tier_name = row[0], row[1]
            draft = emails.payment_failed(
                username=user.username,
                tier=tier_name,
                amount=amount,
                base_url=self.base_url,
                org=(org_id, row[2]) if org_id is not None else None,
            )
            outbox_id = await self._enqueue(session, user, Cause.PAYMENT_FAILED, f"payment:{reference}", draft, now)
        return self._queued([outbox_id] if outbox_id else [])

    async def _enqueue(
        self,
        session: AsyncSession,
        user: User,
        cause: Cause,
        period_key: str,
        draft: emails.Draft,
        now: datetime,
        *,
        status: OutboxStatus = OutboxStatus.PENDING,
    ) -> int | None:
        """Insert the outbox row unless this (user, cause, period) has one; return its id if inserted."""
        insert = sqlite_insert if session.get_bind().dialect.name == "sqlite" else pg_insert
        statement = (
            insert(EmailOutbox)
            .values(
                user_id=user.id,
                cause=cause.value,
                period_key=period_key,
                to_address=user.email,
                subject=draft.subject,
                body=draft.body,
                essential=cause.essential,
                status=status.value,
                attempts=0,
                next_attempt_at=now,
                created_at=now,
            )
            .on_conflict_do_nothing(index_elements=["user_id", "cause", "period_key"])
            .returning(EmailOutbox.id)
        )
        inserted = (await session.execute(statement)).scalar_one_or_none()
        return int(inserted) if inserted is not None and status == OutboxStatus.PENDING else None

    def _queued(self, ids: list[int]) -> list[int]:
        if ids:
            self.kick()
        return ids

    # --- delivery -----------------------------------------------------------------------

    def kick(self) -> None:
        """Make sure a background drain runs soon; never waits for it."""
        if self._task is not None and not self._task.done():
            self._again = True  # the running drain loops once more and picks the new rows up
            return
        self._task = asyncio.get_running_loop().create_task(self._drain_loop(), name="email-outbox-drain")

    async def _drain_loop(self) -> None:
        while True:
            self._again = False
            try:
                await self.drain()
            except Exception:
                logger.exception("email outbox drain failed; rows stay queued for the next one")
            if not self._again:
                return

    async def wait_idle(self) -> None:
        """Wait until the background drain has nothing left to do (tests and shutdown)."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    def start_periodic(self, interval: float = 30.0) -> None:
        """Drain every ``interval`` seconds, for retries that were scheduled for later."""

        async def loop() -> None:
            while True:
                await asyncio.sleep(interval)
                self.kick()

        if self._periodic is None or self._periodic.done():
            self._periodic = asyncio.get_running_loop().create_task(loop(), name="email-outbox-periodic")

    async def aclose(self) -> None:
        """Stop the periodic drain and let a running one finish."""
        if self._periodic is not None:
            self._periodic.cancel()
            self._periodic = None
        await self.wait_idle()

    async def drain(self, *, batch: int = 20) -> DrainReport:
        """Deliver every due outbox row; return what happened to them."""
        report = DrainReport()
        while claimed := await self._claim(batch):
            for row in claimed:
                await self._deliver(row, report)
        return report

    async def _claim(self, limit: int) -> list[Claimed]:
        now = self.clock()
        async with self.db.transaction() as session:
            due = or_(
                and_(EmailOutbox.status == OutboxStatus.PENDING.value, EmailOutbox.next_attempt_at <= now),
                # A dispatcher that died mid-send left its claim behind: take it over after the lease.
                and_(EmailOutbox.status == OutboxStatus.SENDING.value, EmailOutbox.claimed_at < now - self.lease),
            )
            rows = (
                await session.execute(
                    select(EmailOutbox)
                    .where(due)
                    .order_by(EmailOutbox.id)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                )
            ).scalars()
            claimed = []
            for row in rows:
                row.status = OutboxStatus.SENDING.value
                row.claimed_at = now
                row.attempts += 1
                claimed.append(
                    Claimed(row.id, row.to_address, row.subject, row.body, row.attempts, now, row.sealed_token)
                )
            await session.flush()
        return claimed

    def _body(self, row: Claimed) -> str:
        """The text to send: an invitation's link gets its token, opened only now (in memory)."""
        if row.sealed_token is None:
            return row.body
        return row.body.replace(emails.TOKEN_SLOT, self.sealer.open(row.sealed_token))

    async def _deliver(self, row: Claimed, report: DrainReport) -> None:
        error: BaseException | None = None
        try:
            body = self._body(row)
        except Unsealable as exc:
            body, error = "", exc
        if error is not None:
            logger.warning("email %s to %s not sent: its link cannot be opened with this key", row.id, row.to_address)
            outcome = OutboxStatus.FAILED
        elif self.smtp is None:
            logger.info("email (no SMTP_URL set) to %s: %s\n%s", row.to_address, row.subject, body)
            outcome = OutboxStatus.LOGGED
        else:
            message = emails.to_message(
                sender=self.sender,
                to=row.to_address,
                subject=row.subject,
                body=body,
                sent_at=self.clock(),
                ref=f"outbox{row.id}",
            )
            try:
                await asyncio.to_thread(
                    send, self.smtp, message, attempts=self.smtp_attempts, backoff=self.smtp_backoff
                )
                outcome = OutboxStatus.SENT
            except Exception as exc:
                error = exc
                retry = is_transient(exc) and row.attempts < self.max_deliveries
                outcome = OutboxStatus.PENDING if retry else OutboxStatus.FAILED
                logger.warning("email %s to %s not sent (%s): %s", row.id, row.to_address, outcome.value, exc)
        now = self.clock()
        values: dict[str, Any] = {"status": outcome.value}
        if outcome != OutboxStatus.PENDING:
            values["sealed_token"] = None  # delivered or given up: the secret is not kept
        if outcome in (OutboxStatus.SENT, OutboxStatus.LOGGED):
            values.update(sent_at=now, last_error=None)
        else:
            values.update(last_error=f"{type(error).__name__}: {error}"[:2000], claimed_at=None)
            values["next_attempt_at"] = now + self.retry_after * 2 ** (row.attempts - 1)
        async with self.db.transaction() as session:
            await session.execute(
                update(EmailOutbox)
                .where(EmailOutbox.id == row.id, EmailOutbox.claimed_at == row.claimed_at)
                .values(**values)
            )
        counter = {
            OutboxStatus.SENT: "sent",
            OutboxStatus.LOGGED: "logged",
            OutboxStatus.PENDING: "retry_later",
            OutboxStatus.FAILED: "failed",
        }[outcome]
        setattr(report, counter, getattr(report, counter) + 1)


async def recent_outbox(session: AsyncSession, *, limit: int = 50) -> list[EmailOutbox]:
    """The newest outbox rows (for the admin page), skipped dedupe records left out."""
    rows = await session.execute(
        select(EmailOutbox)
        .where(EmailOutbox.status != OutboxStatus.SKIPPED.value)
        .order_by(EmailOutbox.id.desc())
        .limit(limit)
    )
    return list(rows.scalars())
