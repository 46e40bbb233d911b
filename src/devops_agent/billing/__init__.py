"""The credits engine of DevOps Agent: catalog, accounts, charges, purchases, resets.

Ledger rules (enforced by the database where it can):

1. Credits are integers; prices are exact cents.
2. Every change of a balance appends exactly one ``credit_ledger`` row with the
   monthly and purchased deltas and the balances after; the ledger is append-only.
3. For every account, the column ``credits_remaining`` (the monthly balance, see
   ``models.UserSubscription``) equals the sum of ``monthly_delta`` and
   ``purchased_credits_remaining`` the sum of ``purchased_delta``.
4. No balance is ever negative (CHECK constraints).
5. Every ledger row has a unique idempotency key: a retried operation is found,
   not repeated.

This package imports only ``devops_agent.db`` and ``devops_agent.config``: no web,
no payment provider.
"""
