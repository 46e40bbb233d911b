"""What each email says. Plain text: it reads well everywhere and cannot break a layout.

Every function returns a ``Draft``; the outbox stores it as it was when the event
happened (the balance in a low-credit email is the balance that triggered it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

SIGNATURE = "\n\n-- \nDevOps Agent"
OPT_OUT = (
    "\n\nYou receive this because low-credit alerts are on for your account. "
    "Turn them off on your billing page: {base}/billing"
)


@dataclass(frozen=True)
class Draft:
    subject: str
    body: str


def low_balance(*, username: str, balance: int, period_end: datetime, base_url: str) -> Draft:
    """The balance dropped below the low-credit threshold for the first time this period."""
    return Draft(
        subject=f"Only {balance} DevOps Agent credit{'s' if balance != 1 else ''} left",
        body=(
            f"Hello {username},\n\n"
            f"You have {balance} credit{'s' if balance != 1 else ''} left. Your monthly credits renew on "
            f"{period_end.date().isoformat()}.\n\n"
            f"To keep the agent working until then, buy a credit pack (pack credits never expire) "
            f"or move to a bigger plan: {base_url}/billing" + OPT_OUT.format(base=base_url) + SIGNATURE
        ),
    )


def credits_exhausted(*, username: str, period_end: datetime, base_url: str) -> Draft:
    """The balance reached zero: the agent refuses work until credits arrive."""
    return Draft(
        subject="You have run out of DevOps Agent credits",
        body=(
            f"Hello {username},\n\n"
            "You have used all your credits, so the agent cannot run any more actions for you. "
            f"Your monthly credits renew on {period_end.date().isoformat()}.\n\n"
            f"Buy a credit pack or upgrade your plan to continue now: {base_url}/billing"
            + OPT_OUT.format(base=base_url)
            + SIGNATURE
        ),
    )


def pool_low(*, username: str, org_name: str, balance: int, period_end: datetime, link: str, base_url: str) -> Draft:
    """A team's pool dropped below the low-credit threshold this period (to its owner)."""
    return Draft(
        subject=f"{org_name}: only {balance} team credit{'s' if balance != 1 else ''} left",
        body=(
            f"Hello {username},\n\n"
            f"The credit pool of {org_name} has {balance} credit{'s' if balance != 1 else ''} left. "
            f"Its monthly credits renew on {period_end.date().isoformat()}.\n\n"
            f"So that your team's agent keeps working, buy a credit pack for the pool: {link}"
            + OPT_OUT.format(base=base_url)
            + SIGNATURE
        ),
    )


def pool_exhausted(*, username: str, org_name: str, period_end: datetime, link: str, base_url: str) -> Draft:
    """A team's pool reached zero: its members' agent refuses work until credits arrive."""
    return Draft(
        subject=f"{org_name} has run out of team credits",
        body=(
            f"Hello {username},\n\n"
            f"The credit pool of {org_name} is empty, so the agent cannot run any more actions for your team. "
            f"Its monthly credits renew on {period_end.date().isoformat()}.\n\n"
            f"Buy a credit pack for the pool to continue now: {link}" + OPT_OUT.format(base=base_url) + SIGNATURE
        ),
    )


def purchase_receipt(
    *,
    username: str,
    purchase_id: int,
    credits: int,
    price: Decimal,
    completed_at: datetime,
    balance: int,
    base_url: str,
) -> Draft:
    """A receipt for a completed credit-pack purchase (always sent: it concerns money)."""
    return Draft(
        subject=f"Receipt: {credits} DevOps Agent credits",
        body=(
            f"Hello {username},\n\n"
            f"Thank you for your purchase.\n\n"
            f"  Receipt number   DA-{purchase_id:06d}\n"
            f"  Date             {completed_at.strftime('%Y-%m-%d %H:%M UTC')}\n"
            f"  Credit pack      {credits} credits (never expire)\n"
            f"  Amount paid      ${price:.2f} USD\n\n"
            f"Your balance is now {balance} credits. Your purchases and statements: {base_url}/billing" + SIGNATURE
        ),
    )


def payment_failed(
    *, username: str, tier: str, amount: Decimal | None, base_url: str, org: tuple[int, str] | None = None
) -> Draft:
    """A subscription payment failed; the plan is at risk (always sent: it concerns money).

    ``org``: (id, name) of the organization whose pool the plan is (the email goes to its owner).
    """
    charged = f" of ${amount:.2f}" if amount is not None else ""
    plan = f"your {tier} plan" if org is None else f"the {tier} plan of {org[1]}"
    page = f"{base_url}/billing" if org is None else f"{base_url}/orgs/{org[0]}"
    keeps = "Credits you bought in packs stay yours" if org is None else "Credits bought in packs stay in the pool"
    return Draft(
        subject="Your DevOps Agent payment failed" if org is None else f"{org[1]}: the team's payment failed",
        body=(
            f"Hello {username},\n\n"
            f"We could not take the payment{charged} for {plan}. "
            "Please update your payment method so your plan and its monthly credits continue: "
            f"{page}\n\n"
            f"{keeps} whatever happens to the plan." + SIGNATURE
        ),
    )


# Where an invitation's token goes in its link. The outbox stores the body with this slot;
# the token itself is filled in only when the email is sent (see ``sealing``).
TOKEN_SLOT = "{invitation-token}"


def org_invitation(*, org_name: str, inviter: str | None, role: str, expires_at: datetime, base_url: str) -> Draft:
    """An invitation to join an organization; the link carries ``TOKEN_SLOT`` until it is sent."""
    who = f"{inviter} invites you" if inviter else "You are invited"
    article = "an" if role == "admin" else "a"
    return Draft(
        subject=f"Join {org_name} on DevOps Agent",
        body=(
            f"Hello,\n\n"
            f"{who} to join {org_name} on DevOps Agent as {article} {role}. The team shares one plan "
            "and one credit pool for its agent conversations.\n\n"
            f"Accept the invitation (sign in or create an account with this email address first):\n"
            f"{base_url}/orgs/join/{TOKEN_SLOT}\n\n"
            f"The link works once and expires on {expires_at.strftime('%Y-%m-%d %H:%M UTC')}. "
            "If you did not expect this invitation, ignore this email." + SIGNATURE
        ),
    )


def to_message(*, sender: str, to: str, subject: str, body: str, sent_at: datetime, ref: str) -> EmailMessage:
    """A standard MIME message; the Message-ID is derived from the outbox row, so a retry is recognisable."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = format_datetime(sent_at)
    message["Message-ID"] = make_msgid(idstring=ref, domain="devops-agent.local")
    message.set_content(body)
    return message
