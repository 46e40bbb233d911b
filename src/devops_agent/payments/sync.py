"""``devops-agent stripe sync``: one Stripe Product and Price per paid tier, tier's extra seat, and pack.

Idempotent: a tier or pack whose Price already charges the catalog's amount is left
alone; a new amount gets a new Price (Stripe Prices are immutable) and the old one
stops being current here; Products are made once. Every create call carries an
idempotency key derived from what it creates, so a run interrupted and started
again makes nothing twice. Stripe is called outside any database transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import stripe
from sqlalchemy import select, update

from devops_agent.billing.catalog import Catalog
from devops_agent.billing.models import SubscriptionTier
from devops_agent.db import Database

from .models import StripePrice
from .stripe_client import PaymentProviderError, options
from .stripe_gateway import cents


@dataclass(frozen=True)
class Sellable:
    kind: str  # "tier", "seat" (a tier's extra team seat, monthly) or "pack"
    key: str  # the tier's name or the pack's credits
    name: str
    amount: Decimal
    recurring: bool


def sellables(catalog: Catalog) -> list[Sellable]:
    """What Stripe must sell: every paid tier and its extra seats (monthly), and every pack (once)."""
    items = [
        Sellable("tier", t.name, f"DevOps Agent {t.display_name}", t.monthly_price, True)
        for t in catalog.tiers
        if t.monthly_price > 0
    ]
    items += [
        Sellable("seat", t.name, f"DevOps Agent {t.display_name}: extra team seat", t.extra_seat_price, True)
        for t in catalog.tiers
        if t.extra_seat_price is not None and t.extra_seat_price > 0
    ]
    items += [
        Sellable("pack", str(p.credits), f"{p.credits} DevOps Agent credits", p.price, False) for p in catalog.packs
    ]
    return items


async def sync_prices(db: Database, client: stripe.StripeClient, catalog: Catalog, *, now: datetime) -> list[str]:
    """Bring Stripe's Products and Prices in line with the catalog; return one line per item."""
    lines = []
    for item in sellables(catalog):
        amount = cents(item.amount)
        async with db.transaction() as session:
            rows = (
                (
                    await session.execute(
                        select(StripePrice).where(StripePrice.kind == item.kind, StripePrice.key == item.key)
                    )
                )
                .scalars()
                .all()
            )
        current = next((r for r in rows if r.unit_amount == amount), None)
        label = f"{item.kind} {item.key}"
        if current is not None and current.is_current:
            await _point_tier(db, item, current.price_id)
            lines.append(f"unchanged  {label}: {current.price_id} ({_usd(amount)})")
            continue
        product_id = rows[0].product_id if rows else None
        try:
            if product_id is None:
                product: Any = await client.v1.products.create_async(
                    params={"name": item.name, "metadata": {"kind": item.kind, "key": item.key}},
                    options=options("product", item.kind, item.key),  # type: ignore[arg-type]
                )
                product_id = str(product["id"])
            price_id = current.price_id if current is not None else await _create_price(client, item, product_id)
        except stripe.StripeError as exc:
            raise PaymentProviderError(f"Stripe refused {label}: {exc.user_message or exc}") from exc
        async with db.transaction() as session:
            await session.execute(
                update(StripePrice)
                .where(StripePrice.kind == item.kind, StripePrice.key == item.key)
                .values(is_current=False)
            )
            if current is None:
                session.add(
                    StripePrice(
                        kind=item.kind,
                        key=item.key,
                        unit_amount=amount,
                        product_id=product_id,
                        price_id=price_id,
                        is_current=True,
                        created_at=now,
                    )
                )
            else:
                await session.execute(update(StripePrice).where(StripePrice.id == current.id).values(is_current=True))
        await _point_tier(db, item, price_id)
        verb = "created" if not rows else "updated"
        lines.append(f"{verb:<10} {label}: {price_id} ({_usd(amount)})")
    return lines


async def _create_price(client: stripe.StripeClient, item: Sellable, product_id: str) -> str:
    params: dict[str, Any] = {
        "product": product_id,
        "currency": "usd",
        "unit_amount": cents(item.amount),
        "metadata": {"kind": item.kind, "key": item.key},
    }
    if item.recurring:
        params["recurring"] = {"interval": "month"}
    price: Any = await client.v1.prices.create_async(
        params=params,  # type: ignore[arg-type]
        options=options("price", item.kind, item.key, cents(item.amount)),  # type: ignore[arg-type]
    )
    return str(price["id"])


async def _point_tier(db: Database, item: Sellable, price_id: str) -> None:
    if item.kind != "tier":
        return
    async with db.transaction() as session:
        await session.execute(
            update(SubscriptionTier).where(SubscriptionTier.name == item.key).values(stripe_price_id=price_id)
        )


def _usd(amount_cents: int) -> str:
    return f"${amount_cents // 100}.{amount_cents % 100:02d}"
