"""Usernames and emails unique regardless of case (unique indexes on lower(...)).

Registration already refused "alice" when "Alice" existed, by a read before its insert;
two sign-ups racing past that read could both succeed. These indexes make the
database refuse the second. A database that already holds such a pair cannot take
them: the upgrade stops and names the pairs to resolve first (nothing is merged or
renamed behind anyone's back).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25 16:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _refuse_case_duplicates(column: str) -> None:
    clashes = (
        op.get_bind()
        .execute(
            sa.text(
                f"SELECT lower({column}) AS value, count(*) AS n FROM users "  # noqa: S608 - fixed column names
                f"GROUP BY lower({column}) HAVING count(*) > 1"
            )
        )
        .all()
    )
    if clashes:
        listed = ", ".join(f"{value!r} ({n} accounts)" for value, n in clashes)
        raise RuntimeError(
            f"users.{column} holds values that differ only by case: {listed}. "
            "Rename or merge those accounts, then run the upgrade again."
        )


def upgrade() -> None:
    for column in ("username", "email"):
        _refuse_case_duplicates(column)
        op.create_index(f"uq_users_{column}_lower", "users", [sa.text(f"lower({column})")], unique=True)


def downgrade() -> None:
    op.drop_index("uq_users_email_lower", table_name="users")
    op.drop_index("uq_users_username_lower", table_name="users")
