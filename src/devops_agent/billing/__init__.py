"""The credits engine of DevOps Agent: catalog, accounts, charges, purchases, resets.

Ledger rules (enforced by the database where it can):

1. Credits are integers; prices are exact cents.
2. Every credit comes from a grant (``grants``): plan, paid or promotional, spent in
   the draw-down order. Every change of a grant's credits appends exactly one
   ``credit_ledger`` row naming the grant, with the monthly, purchased and
   promotional deltas and the balances after; the ledger is append-only.
3. For every account, the column ``credits_remaining`` (the plan's, monthly balance,
   see ``models.UserSubscription``) equals the sum of ``monthly_delta`` and of its plan
   grants' ``remaining``; ``purchased_credits_remaining`` likewise for ``purchased_delta``
   and paid grants, ``promotional_credits_remaining`` for promotional ones.
4. No balance and no grant is ever negative (CHECK constraints).
5. Every ledger row has a unique idempotency key: a retried operation is found,
   not repeated.

Only the modules below move a balance, one concern each (their docstrings hold their
rules); their public verbs are exported here, so callers write ``billing.charge(...)``:

* ``accounts``: opening and reading an account (and its active grants, in the order
  they are spent), its periods and the monthly reset;
* ``ledger``: the ledger row, idempotency keys and replays, the ledger's sums;
* ``grants``: grants, the draw-down order, expiry, giving credits back;
* ``charges``: charges, refunds, members' caps on an organization's pool;
* ``purchases``: credit packs, their grant and their claw-back;
* ``plans``: tier changes, cancellations, scheduled downgrades, provider-paid periods;
* ``adjustments``: an admin's manual change and promotional grants.

Every verb takes an open ``AsyncSession`` inside a transaction, flushes and never
commits: the caller's ``Database.transaction()`` block decides.

This package imports only ``devops_agent.db`` and ``devops_agent.config``: no web,
no payment provider.
"""

from .accounts import (
    FREE_TIER,
    active_grants,
    apply_due_reset,
    due_account_org_ids,
    due_account_user_ids,
    due_grant_accounts,
    get_account,
    open_account,
    open_org_account,
    settle,
    tier_by_id,
    tier_by_name,
)
from .adjustments import adjust, grant_promotional
from .charges import charge, mark_failed, refund
from .ledger import (
    REQUEST_WINDOW,
    Balance,
    ChargeResult,
    LedgerResult,
    ledger_sums,
    new_key,
    request_key,
)
from .plans import TierChange, cancel, change_tier, end_paid_plan, is_upgrade, set_payment_status, start_paid_period
from .purchases import claw_back_purchase, create_purchase, grant_purchase, purchase_for_request

__all__ = [
    "FREE_TIER",
    "REQUEST_WINDOW",
    "Balance",
    "ChargeResult",
    "LedgerResult",
    "TierChange",
    "active_grants",
    "adjust",
    "apply_due_reset",
    "cancel",
    "change_tier",
    "charge",
    "claw_back_purchase",
    "create_purchase",
    "due_account_org_ids",
    "due_account_user_ids",
    "due_grant_accounts",
    "end_paid_plan",
    "get_account",
    "grant_promotional",
    "grant_purchase",
    "is_upgrade",
    "ledger_sums",
    "mark_failed",
    "new_key",
    "open_account",
    "open_org_account",
    "purchase_for_request",
    "refund",
    "request_key",
    "set_payment_status",
    "settle",
    "start_paid_period",
    "tier_by_id",
    "tier_by_name",
]
