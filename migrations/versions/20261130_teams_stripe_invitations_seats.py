"""teams for real: organizations pay through Stripe, invitations by email, seats on plans

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30 21:03:44

* ``stripe_subscriptions`` and ``auto_recharge_settings`` may belong to an organization's
  pool instead of a user (exactly one of the two on an auto-recharge rule);
* ``email_outbox`` rows may go to an address without an account (an invitation): their
  ``user_id`` may be NULL, ``invitation_id`` names the invitation and ``sealed_token``
  holds its link's token encrypted until the email is delivered;
* ``subscription_tiers`` say how many members an organization on them includes and
  what an extra seat costs; ``organizations.extra_seats`` counts the seats bought.

SQLite rebuilds the altered tables (batch mode) with foreign keys off, as in 0006, so no
ON DELETE action fires while a table is copied.
"""
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import sqlalchemy as sa
from alembic import op

revision: str = '0011'
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
ONE_OWNER = "(user_id IS NULL) <> (organization_id IS NULL)"


@contextmanager
def _sqlite_rebuild() -> Iterator[None]:
    """On SQLite, run table rebuilds with foreign keys off so no ON DELETE action fires."""
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        yield
        return
    bind.exec_driver_sql("COMMIT")
    bind.exec_driver_sql("PRAGMA foreign_keys=OFF")
    bind.exec_driver_sql("BEGIN IMMEDIATE")
    try:
        yield
        broken = bind.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        if broken:
            raise RuntimeError(f"foreign keys broken by the rebuild: {broken[:5]}")
        bind.exec_driver_sql("COMMIT")
    except BaseException:
        bind.exec_driver_sql("ROLLBACK")
        raise
    finally:
        bind.exec_driver_sql("PRAGMA foreign_keys=ON")
        bind.exec_driver_sql("BEGIN IMMEDIATE")


def upgrade() -> None:
    with op.batch_alter_table('subscription_tiers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('included_members', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('extra_seat_price', sa.Numeric(precision=12, scale=2, asdecimal=False), nullable=True))

    with _sqlite_rebuild():
        with op.batch_alter_table('organizations', schema=None) as batch_op:
            batch_op.add_column(sa.Column('extra_seats', sa.Integer(), server_default='0', nullable=False))
            batch_op.create_check_constraint(op.f('ck_organizations_extra_seats_non_negative'), 'extra_seats >= 0')

        with op.batch_alter_table('auto_recharge_settings', schema=None) as batch_op:
            batch_op.add_column(sa.Column('organization_id', BigId, nullable=True))
            batch_op.alter_column('user_id', existing_type=BigId, nullable=True)
            batch_op.create_unique_constraint(batch_op.f('uq_auto_recharge_settings_organization_id'), ['organization_id'])
            batch_op.create_foreign_key(batch_op.f('fk_auto_recharge_settings_organization_id_organizations'), 'organizations', ['organization_id'], ['id'], ondelete='CASCADE')
            batch_op.create_check_constraint(op.f('ck_auto_recharge_settings_one_owner'), ONE_OWNER)

        with op.batch_alter_table('email_outbox', schema=None) as batch_op:
            batch_op.add_column(sa.Column('invitation_id', BigId, nullable=True))
            batch_op.add_column(sa.Column('sealed_token', sa.Text(), nullable=True))
            batch_op.alter_column('user_id', existing_type=BigId, nullable=True)
            batch_op.create_index(batch_op.f('ix_email_outbox_invitation_id'), ['invitation_id'], unique=False)
            batch_op.create_foreign_key(batch_op.f('fk_email_outbox_invitation_id_organization_invitations'), 'organization_invitations', ['invitation_id'], ['id'], ondelete='CASCADE')

        with op.batch_alter_table('stripe_subscriptions', schema=None) as batch_op:
            batch_op.add_column(sa.Column('organization_id', BigId, nullable=True))
            batch_op.alter_column('user_id', existing_type=BigId, nullable=True)
            batch_op.create_index(batch_op.f('ix_stripe_subscriptions_organization_id'), ['organization_id'], unique=False)
            batch_op.create_foreign_key(batch_op.f('fk_stripe_subscriptions_organization_id_organizations'), 'organizations', ['organization_id'], ['id'], ondelete='CASCADE')


def downgrade() -> None:
    # Rows that belong to organizations (or to no user) have no place in the older tables.
    op.execute(sa.text("DELETE FROM stripe_subscriptions WHERE user_id IS NULL"))
    op.execute(sa.text("DELETE FROM auto_recharge_settings WHERE user_id IS NULL"))
    op.execute(sa.text("DELETE FROM email_outbox WHERE user_id IS NULL"))
    with _sqlite_rebuild():
        with op.batch_alter_table('stripe_subscriptions', schema=None) as batch_op:
            batch_op.drop_constraint(batch_op.f('fk_stripe_subscriptions_organization_id_organizations'), type_='foreignkey')
            batch_op.drop_index(batch_op.f('ix_stripe_subscriptions_organization_id'))
            batch_op.alter_column('user_id', existing_type=BigId, nullable=False)
            batch_op.drop_column('organization_id')

        with op.batch_alter_table('email_outbox', schema=None) as batch_op:
            batch_op.drop_constraint(batch_op.f('fk_email_outbox_invitation_id_organization_invitations'), type_='foreignkey')
            batch_op.drop_index(batch_op.f('ix_email_outbox_invitation_id'))
            batch_op.alter_column('user_id', existing_type=BigId, nullable=False)
            batch_op.drop_column('sealed_token')
            batch_op.drop_column('invitation_id')

        with op.batch_alter_table('auto_recharge_settings', schema=None) as batch_op:
            batch_op.drop_constraint(op.f('ck_auto_recharge_settings_one_owner'), type_='check')
            batch_op.drop_constraint(batch_op.f('fk_auto_recharge_settings_organization_id_organizations'), type_='foreignkey')
            batch_op.drop_constraint(batch_op.f('uq_auto_recharge_settings_organization_id'), type_='unique')
            batch_op.alter_column('user_id', existing_type=BigId, nullable=False)
            batch_op.drop_column('organization_id')

        with op.batch_alter_table('organizations', schema=None) as batch_op:
            batch_op.drop_constraint(op.f('ck_organizations_extra_seats_non_negative'), type_='check')
            batch_op.drop_column('extra_seats')

    with op.batch_alter_table('subscription_tiers', schema=None) as batch_op:
        batch_op.drop_column('extra_seat_price')
        batch_op.drop_column('included_members')
