"""Each assistant message keeps what it cost, the balance after it, and who answered.

``tool_calls`` already held the tools a reply ran; ``credits_used`` (the message and its
tools, refunds deducted) and ``balance_after`` (the balance that paid, right after the
reply) make the reply's cost line survive a reload. ``agent`` is the backend that
answered ("offline", "claude"), shown as a label beside the reply. All three are null
on user messages and on replies stored before this revision.

Two indexes serve the customer's ledger, which groups a message's charges: a tool's
usage log finds its message's by conversation, and a usage log its ledger row.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30 21:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("credits_used", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("balance_after", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("agent", sa.String(length=64), nullable=True))
    op.create_index("ix_usage_logs_conversation_id_id", "usage_logs", ["conversation_id", "id"], unique=False)
    op.create_index("ix_credit_ledger_usage_log_id", "credit_ledger", ["usage_log_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_credit_ledger_usage_log_id", table_name="credit_ledger")
    op.drop_index("ix_usage_logs_conversation_id_id", table_name="usage_logs")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_column("agent")
        batch_op.drop_column("balance_after")
        batch_op.drop_column("credits_used")
