"""interrupted turns: a lease on each chat turn in flight, and purchases named by their request

Revision ID: 0009
Revises: 0012
Create Date: 2026-11-30 21:30:00

A user message now holds a lease while its turn runs (``lease_expires_at``, renewed
while the process lives), the usage log of the message's charge (``usage_log_id``)
and the number of times the turn was started afresh (``attempt``). A turn whose lease
ran out without a reply was interrupted (a killed process): ``devops-agent recover``
or a retry with its ``Idempotency-Key`` refunds it.

A pack purchase made for a request with an ``Idempotency-Key`` carries that key
(``request_key``, unique), so a retry after a crash finds the purchase instead of
buying a second one.

Keyed turns that an older version left without a reply are given an expired lease
and their charge's usage log (found by the charge's ledger key), so they can be
recovered too.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# The charge of a keyed message was keyed "u<user>:charge:chat:<key>:message" (billing.ledger.scoped_key).
_BACKFILL = """
UPDATE messages SET
    lease_expires_at = created_at,
    usage_log_id = (
        SELECT credit_ledger.usage_log_id FROM credit_ledger
        WHERE credit_ledger.kind = 'charge'
          AND credit_ledger.idempotency_key = 'u' || messages.user_id || '\\:charge\\:chat\\:' || messages.idempotency_key || '\\:message'
    )
WHERE role = 'user' AND idempotency_key IS NOT NULL AND reply_status IS NULL
"""


def upgrade() -> None:
    op.add_column("messages", sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))
    # No foreign key: SQLite cannot add one in place (only by rebuilding the table), and a
    # usage log goes only with its user, whose messages go with it.
    op.add_column("messages", sa.Column("usage_log_id", BigId, nullable=True))
    op.add_column("messages", sa.Column("attempt", sa.Integer(), server_default="0", nullable=False))
    op.create_index("ix_messages_lease_expires_at", "messages", ["lease_expires_at"])
    op.execute(sa.text(_BACKFILL))  # the colons of the key are escaped for text()
    op.add_column("credit_purchases", sa.Column("request_key", sa.String(length=300), nullable=True))
    op.create_index("uq_credit_purchases_request_key", "credit_purchases", ["request_key"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_credit_purchases_request_key", table_name="credit_purchases")
    op.drop_index("ix_messages_lease_expires_at", table_name="messages")
    with op.batch_alter_table("credit_purchases") as batch_op:
        batch_op.drop_column("request_key")
    with op.batch_alter_table("messages") as batch_op:
        batch_op.drop_column("attempt")
        batch_op.drop_column("usage_log_id")
        batch_op.drop_column("lease_expires_at")
