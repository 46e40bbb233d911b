"""The pricing catalog: tiers, credit packs and per-action credit costs.

The catalog is data, not code: it is read from a TOML file shipped with the
package (``pricing.toml``, the prices on sale) or from ``PRICING_FILE``. The
database holds the tiers too (subscriptions point at them), and
``catalog_sync.sync_catalog`` brings the table in line with the file. The names in
``[costs]`` and ``[size_costs]`` are the agent's tools; this package cannot see them,
so the app and the command line check them at start (``agent.tools.check_catalog_tools``).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from pathlib import Path

from devops_agent.config import get_settings

from .errors import InvalidPackSize

DEFAULT_PRICING_FILE = Path(__file__).with_name("pricing.toml")

ENTITLEMENTS = frozenset(
    {
        "api_access",
        "usage_analytics",
        "advanced_analytics",
        "team_collaboration",
        "custom_templates",
        "compliance_reports",
    }
)


class CatalogError(ValueError):
    """The pricing file is malformed."""


@dataclass(frozen=True)
class TierLimits:
    """What the agent may create for an account on a tier: its guardrails.

    The agent acts on the customer's own cloud bill, so a plan bounds what one chat
    can start there: which sizes, where, and how many creates a calendar month.
    ``auto_approve`` lets creates run without the user's approval in the chat.
    """

    instance_types: tuple[str, ...]
    rds_classes: tuple[str, ...]
    rds_max_storage_gb: int
    regions: tuple[str, ...]
    creates_per_month: int
    auto_approve: bool = False


@dataclass(frozen=True)
class TierSpec:
    name: str
    display_name: str
    monthly_price: Decimal
    monthly_credits: int
    description: str
    features: tuple[str, ...]
    entitlements: frozenset[str]
    limits: TierLimits | None = None  # None: the catalog sets no guardrails for this tier
    # An organization on this tier: members included (None: no limit), price of each extra seat
    # (None: none sold, joining beyond the included members is refused).
    included_members: int | None = None
    extra_seat_price: Decimal | None = None


@dataclass(frozen=True)
class PackSpec:
    credits: int
    price: Decimal
    popular: bool = False
    expires_after_days: int | None = None  # None: the pack's credits never expire

    @property
    def price_per_credit(self) -> Decimal:
        return (self.price / self.credits).quantize(Decimal("0.0001"))


@dataclass(frozen=True)
class SignupBonus:
    """Promotional credits every new user account gets (``[signup_bonus]``)."""

    credits: int
    expires_after_days: int | None = None


@dataclass(frozen=True)
class Catalog:
    tiers: tuple[TierSpec, ...]
    packs: tuple[PackSpec, ...]
    costs: dict[str, int] = field(default_factory=dict)
    default_cost: int = 1
    # Per tool, the credits of each size (instance type, DB class) that prices differently.
    size_costs: dict[str, dict[str, int]] = field(default_factory=dict)
    signup_bonus: SignupBonus | None = None

    def cost_of(self, action: str, size: str | None = None) -> int:
        """Credits one action (``agent_message`` or a tool's name, of a ``size``) costs."""
        if size is not None and (by_size := self.size_costs.get(action)) and size in by_size:
            return by_size[size]
        return self.costs.get(action, self.default_cost)

    def pack(self, credits: int) -> PackSpec | None:
        return next((p for p in self.packs if p.credits == credits), None)

    def require_pack(self, credits: int) -> PackSpec:
        """The pack of that size, or ``InvalidPackSize`` naming the sizes on sale."""
        pack = self.pack(credits)
        if pack is None:
            sizes = ", ".join(str(p.credits) for p in self.packs)
            raise InvalidPackSize(f"There is no {credits}-credit pack; choose one of {sizes}.")
        return pack

    def tier(self, name: str) -> TierSpec | None:
        return next((t for t in self.tiers if t.name == name), None)


def _price(value: object, where: str) -> Decimal:
    try:
        price = Decimal(str(value))
    except ArithmeticError as exc:
        raise CatalogError(f"{where}: price {value!r} is not a number") from exc
    if price < 0 or price != price.quantize(Decimal("0.01")):
        raise CatalogError(f"{where}: price {value!r} must be a non-negative amount in cents")
    return price


def _positive_int(value: object, where: str, *, allow_zero: bool = False) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < (0 if allow_zero else 1):
        raise CatalogError(f"{where}: {value!r} must be a {'non-negative' if allow_zero else 'positive'} integer")
    return value


def _names(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise CatalogError(f"{where}: must be a non-empty list of names")
    return tuple(value)


def _limits(raw: object, where: str) -> TierLimits | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise CatalogError(f"{where}: must be a table")
    return TierLimits(
        instance_types=_names(raw.get("instance_types"), f"{where}.instance_types"),
        rds_classes=_names(raw.get("rds_classes"), f"{where}.rds_classes"),
        rds_max_storage_gb=_positive_int(raw.get("rds_max_storage_gb"), f"{where}.rds_max_storage_gb"),
        regions=_names(raw.get("regions"), f"{where}.regions"),
        creates_per_month=_positive_int(raw.get("creates_per_month"), f"{where}.creates_per_month", allow_zero=True),
        auto_approve=bool(raw.get("auto_approve", False)),
    )


def _size_costs(raw: object) -> dict[str, dict[str, int]]:
    if not isinstance(raw, dict):
        raise CatalogError("[size_costs] must be a table of tables")
    out: dict[str, dict[str, int]] = {}
    for tool, sizes in raw.items():
        if not isinstance(sizes, dict):
            raise CatalogError(f"size_costs.{tool}: must be a table of size = credits")
        out[str(tool)] = {str(k): _positive_int(v, f"size_costs.{tool}.{k}") for k, v in sizes.items()}
    return out


def parse_catalog(data: dict[str, object]) -> Catalog:
    """Validate the parsed TOML and build a catalog; raise ``CatalogError`` on bad data."""
    raw_tiers = data.get("tiers")
    raw_packs = data.get("packs", [])
    raw_costs = data.get("costs", {})
    if not isinstance(raw_tiers, list) or not raw_tiers:
        raise CatalogError("the catalog needs at least one [[tiers]] entry")
    if not isinstance(raw_packs, list) or not isinstance(raw_costs, dict):
        raise CatalogError("[[packs]] must be a list and [costs] a table")
    tiers: list[TierSpec] = []
    for i, t in enumerate(raw_tiers):
        where = f"tiers[{i}]"
        if not isinstance(t, dict) or not isinstance(t.get("name"), str):
            raise CatalogError(f"{where}: needs a name")
        entitlements = frozenset(t.get("entitlements", []))
        unknown = entitlements - ENTITLEMENTS
        if unknown:
            raise CatalogError(f"{where}: unknown entitlements {sorted(unknown)}")
        tiers.append(
            TierSpec(
                name=t["name"],
                display_name=str(t.get("display_name", t["name"].title())),
                monthly_price=_price(t.get("monthly_price", "0"), where),
                monthly_credits=_positive_int(t.get("monthly_credits"), where, allow_zero=True),
                description=str(t.get("description", "")),
                features=tuple(str(f) for f in t.get("features", [])),
                entitlements=entitlements,
                limits=_limits(t.get("limits"), f"{where}.limits"),
                included_members=(
                    _positive_int(t["included_members"], f"{where}.included_members")
                    if "included_members" in t
                    else None
                ),
                extra_seat_price=(
                    _price(t["extra_seat_price"], f"{where}.extra_seat_price") if "extra_seat_price" in t else None
                ),
            )
        )
    names = [t.name for t in tiers]
    if len(set(names)) != len(names):
        raise CatalogError("tier names must be unique")
    if "free" not in names:
        raise CatalogError("the catalog needs a tier named 'free' (new users land on it)")
    packs = []
    for i, p in enumerate(raw_packs):
        where = f"packs[{i}]"
        if not isinstance(p, dict):
            raise CatalogError(f"{where}: must be a table")
        packs.append(
            PackSpec(
                credits=_positive_int(p.get("credits"), where),
                price=_price(p.get("price"), where),
                popular=bool(p.get("popular", False)),
                expires_after_days=(
                    _positive_int(p["expires_after_days"], f"{where}.expires_after_days")
                    if "expires_after_days" in p
                    else None
                ),
            )
        )
    costs = {str(k): _positive_int(v, f"costs.{k}") for k, v in raw_costs.items()}
    default_cost = costs.pop("default", 1)
    return Catalog(
        tiers=tuple(tiers),
        packs=tuple(sorted(packs, key=lambda p: p.credits)),
        costs=costs,
        default_cost=default_cost,
        size_costs=_size_costs(data.get("size_costs", {})),
        signup_bonus=_signup_bonus(data.get("signup_bonus")),
    )


def _signup_bonus(raw: object) -> SignupBonus | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise CatalogError("[signup_bonus] must be a table")
    days = raw.get("expires_after_days")
    return SignupBonus(
        credits=_positive_int(raw.get("credits"), "signup_bonus.credits"),
        expires_after_days=_positive_int(days, "signup_bonus.expires_after_days") if days is not None else None,
    )


def load_catalog(path: Path | None = None) -> Catalog:
    """Read and validate a pricing file (the shipped one by default)."""
    source = path or DEFAULT_PRICING_FILE
    with source.open("rb") as fh:
        try:
            data = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise CatalogError(f"{source}: {exc}") from exc
    return parse_catalog(data)


@lru_cache(maxsize=8)
def cached_catalog(path: Path | None = None) -> Catalog:
    """The catalog for a path, read once per process."""
    return load_catalog(path)


def current_catalog() -> Catalog:
    """The catalog the settings name (``PRICING_FILE``), read once per process."""
    return cached_catalog(get_settings().pricing_file)
