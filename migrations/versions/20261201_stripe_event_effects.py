"""A Stripe event keeps its effect, so a redelivery reports it again.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-01 07:15:00

The webhook queues a receipt (or a failed-payment email, or a seats sync) from an
event's effect once its transaction committed. A process that died between that commit
and the queueing lost the email for good: the redelivery found the event recorded and
reported nothing. Now the effect is recorded with the event and a redelivery reports it
again; what it triggers is idempotent (an email per purchase or invoice; the seats
sync sets what should be). Events recorded before this revision have none.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | Sequence[str] | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("stripe_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("effect", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("stripe_events", schema=None) as batch_op:
        batch_op.drop_column("effect")
