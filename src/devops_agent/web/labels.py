"""Readable names for what a customer pays for: actions (the message, each tool) and ledger kinds.

The API keeps the machine names (``create_ec2_instance``, ``tier_change``); pages show
these. Every page gets them as one JSON block (``base.html``), so the chat chips, the
activity list and the CSV export all say the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass

from devops_agent.billing.catalog import Catalog

MESSAGE_ACTION = "agent_message"

ACTION_LABELS: dict[str, str] = {
    MESSAGE_ACTION: "Message to the agent",
    "get_ec2_instances": "List EC2 instances",
    "create_ec2_instance": "Create an EC2 instance",
    "stop_ec2_instance": "Stop an EC2 instance",
    "get_rds_instances": "List RDS databases",
    "create_rds_instance": "Create an RDS database",
    "get_s3_buckets": "List S3 buckets",
    "create_s3_bucket": "Create an S3 bucket",
}

KIND_LABELS: dict[str, str] = {
    "monthly_grant": "Monthly credits",
    "grant": "Promotional credits",
    "expiry": "Credits expired",
    "purchase": "Credit pack bought",
    "charge": "Agent use",
    "refund": "Refund",
    "adjustment": "Adjustment",
    "tier_change": "Plan change",
    "clawback": "Pack payment reversed",
}


def action_label(name: str | None) -> str:
    """The readable name of an action; an unknown tool reads as its words ("Reboot rds instance")."""
    if not name:
        return ACTION_LABELS[MESSAGE_ACTION]
    return ACTION_LABELS.get(name) or name.replace("_", " ").capitalize()


def kind_label(kind: str) -> str:
    return KIND_LABELS.get(kind) or kind.replace("_", " ").capitalize()


@dataclass(frozen=True)
class PriceLine:
    action: str
    label: str
    credits: int


def price_list(catalog: Catalog) -> list[PriceLine]:
    """Every action with its price, the message first, then the cheapest tools."""
    lines = [PriceLine(name, label, catalog.cost_of(name)) for name, label in ACTION_LABELS.items()]
    return [lines[0], *sorted(lines[1:], key=lambda line: (line.credits, line.label))]


def plan_buys(monthly_credits: int, catalog: Catalog) -> str:
    """What a month's credits buy, from the catalog's costs ("200 messages, or 100 messages that each list …")."""
    message = catalog.cost_of(MESSAGE_ACTION)
    listing = message + catalog.cost_of("get_ec2_instances")
    create = message + catalog.cost_of("create_ec2_instance")

    def times(n: int, what: str) -> str:
        return f"{n:,} {what}" if n != 1 else f"1 {what.removesuffix('s')}"

    return (
        f"{times(monthly_credits // message, 'messages')}, or {times(monthly_credits // listing, 'lists')} "
        f"of your resources, or {times(monthly_credits // create, 'new servers')}"
    )
