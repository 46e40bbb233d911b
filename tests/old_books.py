"""Books written by the code of before credit grants (schema 0008), with raw SQL.

Today's models have columns the old schema lacks (grants, promotional balances), so the
migration tests fill an old database row by row, as the old engine left it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from alembic import command
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from devops_agent.db import Database
from devops_agent.migrate import alembic_config
from tests.scratch_pg import brand_new_postgres


def to_revision(revision: str, *, down: bool = False) -> Callable[[Connection], None]:
    """Alembic's upgrade (or downgrade) to ``revision`` on the connection it is run with."""

    def run(connection: Connection) -> None:
        cfg = alembic_config()
        cfg.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(cfg, revision)

    return run


async def migrate(db: Database, revision: str, *, down: bool = False) -> None:
    async with db.engine.connect() as conn:
        await conn.run_sync(to_revision(revision, down=down))
        await conn.commit()


@asynccontextmanager
async def scratch_database(backend: str, tmp_path: Path) -> AsyncIterator[Database]:
    """An empty database of its own (no migration run yet) on ``backend``."""
    if backend == "sqlite":
        db = Database(f"sqlite:///{tmp_path / 'old.db'}")
        try:
            yield db
        finally:
            await db.dispose()
        return
    async with brand_new_postgres() as url:
        db = Database(url)
        try:
            yield db
        finally:
            await db.dispose()


class OldBooks:
    """Inserts rows as the engine of before grants wrote them (ids returned)."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self.sqlite = conn.dialect.name == "sqlite"
        self._keys = 0

    def at(self, when: datetime) -> Any:
        """A timestamp as the old engine's column type stored it (SQLite: naive UTC text)."""
        return when.strftime("%Y-%m-%d %H:%M:%S.%f") if self.sqlite else when

    def money(self, amount: str) -> Any:
        return amount if self.sqlite else Decimal(amount)

    async def _insert(self, table: str, **values: Any) -> int:
        columns = ", ".join(values)
        params = ", ".join(f":{c}" for c in values)
        statement = text(f"INSERT INTO {table} ({columns}) VALUES ({params}) RETURNING id")  # noqa: S608
        return int((await self.conn.execute(statement, values)).scalar_one())

    async def tier(self, name: str, *, price: str, credits: int) -> int:
        return await self._insert(
            "subscription_tiers",
            name=name,
            display_name=name.title(),
            monthly_price=self.money(price),
            monthly_credits=credits,
            description="",
            features="[]",
            entitlements="[]",
            sort_order=credits,
            is_active=True,
        )

    async def user(self, name: str, *, now: datetime) -> int:
        return await self._insert(
            "users",
            username=name,
            email=f"{name}@example.com",
            password_hash="-",
            is_admin=False,
            is_suspended=False,
            email_opt_out=False,
            created_at=self.at(now),
        )

    async def organization(self, name: str, *, owner: int, now: datetime) -> int:
        return await self._insert(
            "organizations", name=name, created_by=owner, created_at=self.at(now), updated_at=self.at(now)
        )

    async def account(
        self,
        *,
        tier_id: int,
        monthly: int,
        purchased: int,
        start: datetime,
        end: datetime,
        user_id: int | None = None,
        org_id: int | None = None,
    ) -> int:
        return await self._insert(
            "user_subscriptions",
            user_id=user_id,
            organization_id=org_id,
            tier_id=tier_id,
            credits_remaining=monthly,
            purchased_credits_remaining=purchased,
            credits_used_this_month=0,
            total_credits_used=0,
            billing_anchor=self.at(start),
            current_period_start=self.at(start),
            current_period_end=self.at(end),
            payment_status="active",
            cancel_at_period_end=False,
            created_at=self.at(start),
            updated_at=self.at(start),
        )

    async def purchase(
        self, *, user_id: int, credits: int, price: str, status: str, now: datetime, org_id: int | None = None
    ) -> int:
        return await self._insert(
            "credit_purchases",
            user_id=user_id,
            organization_id=org_id,
            credits_amount=credits,
            price_paid=self.money(price),
            payment_status=status,
            clawback_shortfall=0,
            created_at=self.at(now),
            completed_at=self.at(now),
        )

    async def usage(self, *, user_id: int, credits: int, now: datetime, org_id: int | None = None) -> int:
        return await self._insert(
            "usage_logs",
            user_id=user_id,
            organization_id=org_id,
            action_type="tool_use",
            credits_used=credits,
            success=True,
            created_at=self.at(now),
        )

    async def ledger(
        self,
        *,
        account: int,
        user_id: int | None,
        kind: str,
        monthly: int,
        purchased: int,
        after: tuple[int, int],
        now: datetime,
        key: str | None = None,
        usage_log_id: int | None = None,
        purchase_id: int | None = None,
    ) -> int:
        self._keys += 1
        return await self._insert(
            "credit_ledger",
            subscription_id=account,
            user_id=user_id,
            kind=kind,
            monthly_delta=monthly,
            purchased_delta=purchased,
            monthly_balance_after=after[0],
            purchased_balance_after=after[1],
            usage_log_id=usage_log_id,
            purchase_id=purchase_id,
            idempotency_key=key or f"old:{account}:{self._keys}",
            created_at=self.at(now),
        )
