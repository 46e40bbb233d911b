"""The books audit: does every account still obey the ledger's rules? (``devops-agent audit``)

The engine keeps these rules in each transaction; the audit checks afterwards, over the
whole database, that nothing (a bug, a hand-edited row, a restore from a backup) broke
them:

* ``balances``: each account's three stored balances (monthly, purchased, promotional)
  equal the sums of its ledger deltas;
* ``balance_after``: its newest ledger row's ``*_balance_after`` equal the stored balances;
* ``grants``: each account's three balances equal the sums of its grants' remaining
  credits by category (plan, paid, promotional);
* ``grant_ledger``: each grant's ledger rows sum to its remaining credits. Grants the
  migration to grants made from the balances of the time (``MIGRATED``) are left out:
  their credits arrived without a ledger row naming them;
* ``charges``: each charge (its ledger rows, one per grant it drew from) points to a
  usage log of the same amount and account;
* ``usage_logs``: each charged usage log has exactly one charge and at most one
  refund, and a refund gives back what the charge took;
* ``member_caps``: no member of a team spent more than their cap in the pool's current
  period (the counter the charge checks, or the period's usage logs net of refunds:
  whichever is higher). A cap lowered below what a member already spent this period
  shows here too until the period ends: the audit cannot tell it from a charge that
  passed the cap;
* ``purchases``: each completed (or since refunded) purchase has exactly one grant of
  its credits, and a pending or failed one has none.

Each check is one set-based query (no query per account), so 100k accounts take
seconds. The reads run in one snapshot (``Database.snapshot``) that never blocks a
writer, so the service keeps charging while the audit runs and the checks agree with
each other. Each run is kept in ``audit_runs``: the admin page and ``/metrics`` show the
last one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    JSON,
    Boolean,
    Integer,
    Select,
    Table,
    and_,
    case,
    func,
    literal,
    or_,
    select,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from devops_agent.db import Base, Database

from .models import (
    BigId,
    CreditGrant,
    CreditLedger,
    CreditPurchase,
    GrantCategory,
    LedgerKind,
    PurchaseStatus,
    UsageLog,
    UserSubscription,
)
from .org_models import Organization, OrganizationMember
from .types import UTCDateTime

_sub = cast(Table, UserSubscription.__table__)
_ledger = cast(Table, CreditLedger.__table__)
_grants = cast(Table, CreditGrant.__table__)
_usage = cast(Table, UsageLog.__table__)
_purchases = cast(Table, CreditPurchase.__table__)
_members = cast(Table, OrganizationMember.__table__)
_orgs = cast(Table, Organization.__table__)

# Discrepancies kept per check (the total is counted in full).
EXAMPLES = 20
# The marks migration 0014 left on the grants it made from the balances of the time
# (the purchased balance's source, the monthly balance's reason).
MIGRATED_SOURCE = "balance before grants"
MIGRATED_PLAN_REASON = "the monthly credits before grants"
# A ledger row's change of the account's total, and whether it is an operation's keyed
# (first) row rather than a row split from it (``ledger.split_key``).
_delta = _ledger.c.monthly_delta + _ledger.c.purchased_delta + _ledger.c.promotional_delta
_keyed = ~_ledger.c.idempotency_key.like("split:%")


class AuditRun(Base):
    """One run of the books audit: when, whether the books held, and the first problems."""

    __tablename__ = "audit_runs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    ok: Mapped[bool] = mapped_column(Boolean)
    accounts: Mapped[int] = mapped_column(Integer)
    discrepancies: Mapped[int] = mapped_column(Integer)
    # {check name: number of discrepancies}, and the first few as {check, account, detail}.
    checks: Mapped[dict[str, int]] = mapped_column(JSON)
    examples: Mapped[list[dict[str, Any]]] = mapped_column(JSON)


@dataclass(frozen=True)
class Discrepancy:
    check: str
    account: str  # "user 12" or "organization 3"
    detail: str


@dataclass
class CheckResult:
    name: str
    description: str
    count: int = 0
    examples: list[Discrepancy] = field(default_factory=list)


@dataclass
class AuditReport:
    started_at: datetime
    finished_at: datetime
    accounts: int
    checks: list[CheckResult]

    @property
    def discrepancies(self) -> int:
        return sum(c.count for c in self.checks)

    @property
    def ok(self) -> bool:
        return self.discrepancies == 0

    def first(self, limit: int = EXAMPLES) -> list[Discrepancy]:
        """The first discrepancies, check by check."""
        return [d for c in self.checks for d in c.examples][:limit]


def _account(user_id: Any, org_id: Any) -> str:
    if org_id is not None:
        return f"organization {org_id}"
    return f"user {user_id}"


@dataclass(frozen=True)
class _Check:
    name: str
    description: str
    query: Callable[[], Select[Any]]
    describe: Callable[[Any], str]


def _with_total(query: Select[Any]) -> Select[Any]:
    """The failing rows with their total count beside each (``count(*) OVER ()``), the first few only."""
    return query.add_columns(func.count().over().label("total")).limit(EXAMPLES)


def _balances_differing_from(sums: Any, names: tuple[str, str, str]) -> Select[Any]:
    """Accounts whose three balances (monthly, purchased, promotional) differ from the three
    columns ``names`` of ``sums`` (one row per account; an account without a row sums to 0)."""
    expected = [func.coalesce(sums.c[name], 0) for name in names]
    stored = (_sub.c.credits_remaining, _sub.c.purchased_credits_remaining, _sub.c.promotional_credits_remaining)
    return (
        select(
            _sub.c.user_id,
            _sub.c.organization_id,
            *stored,
            *(value.label(name) for value, name in zip(expected, names, strict=True)),
        )
        .select_from(_sub.outerjoin(sums, sums.c.subscription_id == _sub.c.id))
        .where(or_(*(have != want for have, want in zip(stored, expected, strict=True))))
        .order_by(_sub.c.id)
    )


def _balances() -> Select[Any]:
    sums = (
        select(
            _ledger.c.subscription_id,
            func.sum(_ledger.c.monthly_delta).label("ledger_monthly"),
            func.sum(_ledger.c.purchased_delta).label("ledger_purchased"),
            func.sum(_ledger.c.promotional_delta).label("ledger_promotional"),
        )
        .group_by(_ledger.c.subscription_id)
        .subquery()
    )
    return _balances_differing_from(sums, ("ledger_monthly", "ledger_purchased", "ledger_promotional"))


def _by_category(category: GrantCategory) -> Any:
    return func.sum(case((_grants.c.category == category.value, _grants.c.remaining), else_=0))


def _grant_balances() -> Select[Any]:
    sums = (
        select(
            _grants.c.subscription_id,
            _by_category(GrantCategory.PLAN).label("plan"),
            _by_category(GrantCategory.PAID).label("paid"),
            _by_category(GrantCategory.PROMOTIONAL).label("promotional"),
        )
        .group_by(_grants.c.subscription_id)
        .subquery()
    )
    return _balances_differing_from(sums, ("plan", "paid", "promotional"))


def _grant_ledger() -> Select[Any]:
    moved = (
        select(_ledger.c.grant_id, func.sum(_delta).label("moved"))
        .where(_ledger.c.grant_id.is_not(None))
        .group_by(_ledger.c.grant_id)
        .subquery()
    )
    total = func.coalesce(moved.c.moved, 0)
    migrated = or_(_grants.c.source == MIGRATED_SOURCE, _grants.c.reason == MIGRATED_PLAN_REASON)
    return (
        select(
            _sub.c.user_id,
            _sub.c.organization_id,
            _grants.c.id.label("grant_id"),
            _grants.c.category,
            _grants.c.remaining,
            total.label("moved"),
        )
        .select_from(
            _grants.join(_sub, _sub.c.id == _grants.c.subscription_id).outerjoin(
                moved, moved.c.grant_id == _grants.c.id
            )
        )
        .where(~migrated, _grants.c.remaining != total)
        .order_by(_grants.c.id)
    )


def _balance_after() -> Select[Any]:
    newest = (
        select(_ledger.c.subscription_id, func.max(_ledger.c.id).label("id"))
        .group_by(_ledger.c.subscription_id)
        .subquery()
    )
    last = _ledger.alias("last")
    return (
        select(
            _sub.c.user_id,
            _sub.c.organization_id,
            _sub.c.credits_remaining,
            _sub.c.purchased_credits_remaining,
            last.c.id.label("ledger_id"),
            _sub.c.promotional_credits_remaining,
            last.c.monthly_balance_after,
            last.c.purchased_balance_after,
            last.c.promotional_balance_after,
        )
        .select_from(
            _sub.outerjoin(newest, newest.c.subscription_id == _sub.c.id).outerjoin(last, last.c.id == newest.c.id)
        )
        .where(
            or_(
                last.c.id.is_(None),
                last.c.monthly_balance_after != _sub.c.credits_remaining,
                last.c.purchased_balance_after != _sub.c.purchased_credits_remaining,
                last.c.promotional_balance_after != _sub.c.promotional_credits_remaining,
            )
        )
        .order_by(_sub.c.id)
    )


def _charges() -> Select[Any]:
    # A charge is its ledger rows for one usage log, one per grant it drew from; a charge
    # row whose usage log is gone (NULL) stands alone.
    charges = (
        select(
            _ledger.c.subscription_id,
            _ledger.c.usage_log_id,
            func.min(_ledger.c.id).label("ledger_id"),
            func.sum(-_delta).label("charged"),
        )
        .where(_ledger.c.kind == LedgerKind.CHARGE.value)
        .group_by(
            _ledger.c.subscription_id, _ledger.c.usage_log_id, func.coalesce(_ledger.c.usage_log_id, -_ledger.c.id)
        )
        .subquery()
    )
    return (
        select(
            _sub.c.user_id,
            _sub.c.organization_id,
            charges.c.ledger_id,
            charges.c.usage_log_id,
            charges.c.charged,
            _usage.c.id.label("usage_id"),
            _usage.c.credits_used,
            _usage.c.user_id.label("usage_user_id"),
            _usage.c.organization_id.label("usage_org_id"),
        )
        .select_from(
            charges.join(_sub, _sub.c.id == charges.c.subscription_id).outerjoin(
                _usage, _usage.c.id == charges.c.usage_log_id
            )
        )
        .where(
            or_(
                _usage.c.id.is_(None),
                _usage.c.credits_used != charges.c.charged,
                # The account charged is the one the usage log names: the pool, else the user's.
                _sub.c.organization_id.is_distinct_from(_usage.c.organization_id),
                and_(_usage.c.organization_id.is_(None), _sub.c.user_id.is_distinct_from(_usage.c.user_id)),
            ),
        )
        .order_by(charges.c.ledger_id)
    )


def _usage_logs() -> Select[Any]:
    is_charge = _ledger.c.kind == LedgerKind.CHARGE.value
    is_refund = _ledger.c.kind == LedgerKind.REFUND.value
    # An operation is counted by its keyed row; the rows split from it only add their credits.
    rows = (
        select(
            _ledger.c.usage_log_id,
            func.sum(case((and_(is_charge, _keyed), 1), else_=0)).label("charges"),
            func.sum(case((and_(is_refund, _keyed), 1), else_=0)).label("refunds"),
            func.sum(case((is_charge, -_delta), else_=0)).label("charged"),
            func.sum(case((is_refund, _delta), else_=0)).label("refunded"),
        )
        .where(_ledger.c.usage_log_id.is_not(None), or_(is_charge, is_refund))
        .group_by(_ledger.c.usage_log_id)
        .subquery()
    )
    charges, refunds = func.coalesce(rows.c.charges, 0), func.coalesce(rows.c.refunds, 0)
    return (
        select(
            _usage.c.user_id,
            _usage.c.organization_id,
            _usage.c.id.label("usage_id"),
            charges.label("charges"),
            refunds.label("refunds"),
            func.coalesce(rows.c.charged, 0).label("charged"),
            func.coalesce(rows.c.refunded, 0).label("refunded"),
        )
        .select_from(_usage.outerjoin(rows, rows.c.usage_log_id == _usage.c.id))
        .where(
            _usage.c.credits_used > 0,
            or_(
                charges != 1,
                refunds > 1,
                and_(refunds == 1, func.coalesce(rows.c.refunded, 0) != func.coalesce(rows.c.charged, 0)),
            ),
        )
        .order_by(_usage.c.id)
    )


def _member_caps() -> Select[Any]:
    pool = _sub.alias("pool")
    # A join, not NOT EXISTS: the ledger has no index on usage_log_id, and a correlated
    # subquery per usage log would scan it once per row on SQLite.
    refunds = _ledger.alias("refunds")
    spent = (
        select(
            _usage.c.organization_id,
            _usage.c.user_id,
            func.sum(_usage.c.credits_used).label("credits"),
        )
        .select_from(
            _usage.join(pool, pool.c.organization_id == _usage.c.organization_id).outerjoin(
                refunds,
                and_(refunds.c.usage_log_id == _usage.c.id, refunds.c.kind == LedgerKind.REFUND.value),
            )
        )
        .where(_usage.c.created_at >= pool.c.current_period_start, refunds.c.id.is_(None))
        .group_by(_usage.c.organization_id, _usage.c.user_id)
        .subquery()
    )
    cap = func.coalesce(_members.c.monthly_cap, _orgs.c.default_member_cap)
    counter = case((_members.c.usage_period_start == _sub.c.current_period_start, _members.c.credits_used), else_=0)
    logged = func.coalesce(spent.c.credits, 0)
    used = case((counter > logged, counter), else_=logged)
    return (
        select(
            _members.c.user_id.label("member_id"),
            _members.c.organization_id,
            cap.label("cap"),
            counter.label("counter"),
            logged.label("logged"),
            literal(None).label("user_id"),
        )
        .select_from(
            _members.join(_orgs, _orgs.c.id == _members.c.organization_id)
            .join(_sub, _sub.c.organization_id == _members.c.organization_id)
            .outerjoin(
                spent,
                and_(
                    spent.c.organization_id == _members.c.organization_id,
                    spent.c.user_id == _members.c.user_id,
                ),
            )
        )
        .where(cap.is_not(None), used > cap)
        .order_by(_members.c.organization_id, _members.c.user_id)
    )


def _purchases_check() -> Select[Any]:
    grants = (
        select(
            _ledger.c.purchase_id,
            func.count().label("grants"),
            func.sum(_ledger.c.purchased_delta).label("credits"),
        )
        .where(_ledger.c.kind == LedgerKind.PURCHASE.value, _ledger.c.purchase_id.is_not(None))
        .group_by(_ledger.c.purchase_id)
        .subquery()
    )
    granted = (_purchases.c.payment_status == PurchaseStatus.COMPLETED.value) | (
        _purchases.c.payment_status == PurchaseStatus.REFUNDED.value
    )
    count = func.coalesce(grants.c.grants, 0)
    return (
        select(
            _purchases.c.user_id,
            _purchases.c.organization_id,
            _purchases.c.id.label("purchase_id"),
            _purchases.c.payment_status,
            _purchases.c.credits_amount,
            count.label("grants"),
            func.coalesce(grants.c.credits, 0).label("granted"),
        )
        .select_from(_purchases.outerjoin(grants, grants.c.purchase_id == _purchases.c.id))
        .where(
            or_(
                and_(granted, or_(count != 1, grants.c.credits != _purchases.c.credits_amount)),
                and_(~granted, count != 0),
            )
        )
        .order_by(_purchases.c.id)
    )


def _describe_charge(r: Any) -> str:
    if r.usage_id is None:
        return f"charge row {r.ledger_id} ({r.charged} credits) has no usage log"
    payer = _account(r.usage_user_id, r.usage_org_id)
    if payer != _account(r.user_id, r.organization_id):
        return f"charge row {r.ledger_id} charged this account for usage log {r.usage_id} of {payer}"
    return f"charge row {r.ledger_id} took {r.charged} credits, usage log {r.usage_id} says {r.credits_used}"


CHECKS = (
    _Check(
        "balances",
        "stored balances equal the ledger's sums",
        _balances,
        lambda r: (
            f"balance {r.credits_remaining} monthly + {r.purchased_credits_remaining} purchased + "
            f"{r.promotional_credits_remaining} promotional, ledger sums {r.ledger_monthly} + {r.ledger_purchased} + "
            f"{r.ledger_promotional}"
        ),
    ),
    _Check(
        "balance_after",
        "the newest ledger row's balances after equal the stored balances",
        _balance_after,
        lambda r: (
            "no ledger row"
            if r.ledger_id is None
            else f"balance {r.credits_remaining} + {r.purchased_credits_remaining} + "
            f"{r.promotional_credits_remaining}, ledger row {r.ledger_id} says {r.monthly_balance_after} + "
            f"{r.purchased_balance_after} + {r.promotional_balance_after}"
        ),
    ),
    _Check(
        "grants",
        "stored balances equal the sums of the account's grants by category",
        _grant_balances,
        lambda r: (
            f"balance {r.credits_remaining} + {r.purchased_credits_remaining} + {r.promotional_credits_remaining} "
            f"(plan + paid + promotional), grants {r.plan} + {r.paid} + {r.promotional}"
        ),
    ),
    _Check(
        "grant_ledger",
        "each grant's ledger rows sum to its remaining credits",
        _grant_ledger,
        lambda r: f"{r.category} grant {r.grant_id} has {r.remaining} credits left, its ledger rows sum to {r.moved}",
    ),
    _Check(
        "charges",
        "each charge (its rows, one per grant) points to a usage log of the same amount and account",
        _charges,
        _describe_charge,
    ),
    _Check(
        "usage_logs",
        "each charged usage log has one charge and at most one refund of the same amount",
        _usage_logs,
        lambda r: (
            f"usage log {r.usage_id}: {r.charges} charge(s) for {r.charged} credits, "
            f"{r.refunds} refund(s) for {r.refunded}"
        ),
    ),
    _Check(
        "member_caps",
        "no member spent more than their cap in the pool's period",
        _member_caps,
        lambda r: f"member user {r.member_id} spent {max(r.counter, r.logged)} credits, cap {r.cap}",
    ),
    _Check(
        "purchases",
        "each completed purchase has exactly one grant of its credits",
        _purchases_check,
        lambda r: (
            f"purchase {r.purchase_id} ({r.payment_status}, {r.credits_amount} credits) "
            f"has {r.grants} grant(s) for {r.granted}"
        ),
    ),
)


async def _run_check(connection: AsyncConnection, check: _Check) -> CheckResult:
    result = CheckResult(check.name, check.description)
    for row in (await connection.execute(_with_total(check.query()))).all():
        result.count = int(row.total)
        result.examples.append(Discrepancy(check.name, _account(row.user_id, row.organization_id), check.describe(row)))
    return result


async def check_books(db: Database, *, clock: Callable[[], datetime]) -> AuditReport:
    """Run every check on one consistent snapshot of the database (nothing is written)."""
    started = clock()
    async with db.snapshot() as connection:
        accounts = int((await connection.execute(select(func.count()).select_from(_sub))).scalar_one())
        results = [await _run_check(connection, check) for check in CHECKS]
    return AuditReport(started_at=started, finished_at=clock(), accounts=accounts, checks=results)


async def record_run(session: AsyncSession, report: AuditReport) -> AuditRun:
    """Keep a run's outcome (its counts and first discrepancies) for the admin page and the metrics."""
    run = AuditRun(
        started_at=report.started_at,
        finished_at=report.finished_at,
        ok=report.ok,
        accounts=report.accounts,
        discrepancies=report.discrepancies,
        checks={c.name: c.count for c in report.checks},
        examples=[{"check": d.check, "account": d.account, "detail": d.detail} for d in report.first()],
    )
    session.add(run)
    await session.flush()
    return run


async def last_run(session: AsyncSession) -> AuditRun | None:
    """The newest audit run, or None when the audit never ran."""
    return (await session.execute(select(AuditRun).order_by(AuditRun.id.desc()).limit(1))).scalar_one_or_none()


def summary_lines(report: AuditReport) -> list[str]:
    """The run as a table of checks, then the first discrepancies."""
    lines = [f"{'Check':<15}{'Problems':>9}  What it checks"]
    lines += [f"{c.name:<15}{c.count:>9}  {c.description}" for c in report.checks]
    lines.append("")
    seconds = (report.finished_at - report.started_at).total_seconds()
    verdict = "the books hold" if report.ok else f"{report.discrepancies} discrepancies"
    lines.append(f"{report.accounts} account(s) checked in {seconds:.1f} s: {verdict}.")
    first = report.first()
    if first:
        lines.append("")
        lines.append("First discrepancies:")
        lines += [f"  {d.check}: {d.account}: {d.detail}" for d in first]
    return lines
