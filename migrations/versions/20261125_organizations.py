"""organizations: teams that share one plan and one credit pool

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25 12:26:40.533733

New tables ``organizations``, ``organization_members`` and ``organization_invitations``;
a credit account (``user_subscriptions``) may now belong to an organization instead of
a user (exactly one of the two is set), and purchases and usage logs record the
organization whose pool they touched.

SQLite cannot alter a column or add a constraint in place, so Alembic's batch mode
rebuilds those tables (copy, drop, rename). Dropping a table with foreign keys on runs
an implicit DELETE whose ON DELETE actions would empty or null the ledger's references,
and ``PRAGMA foreign_keys`` is ignored inside a transaction: so on SQLite we commit,
switch foreign keys off for the rebuild, check them with ``foreign_key_check`` and
switch them back on (the procedure of SQLite's "ALTER TABLE" documentation).
"""
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: str | Sequence[str] | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
ONE_OWNER = "(user_id IS NOT NULL AND organization_id IS NULL) OR (user_id IS NULL AND organization_id IS NOT NULL)"


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
        # Alembic still holds its transaction open; give it one to commit.
        bind.exec_driver_sql("BEGIN IMMEDIATE")


def upgrade() -> None:
    op.create_table('organizations',
    sa.Column('id', BigId, nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('created_by', BigId, nullable=True),
    sa.Column('default_member_cap', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('default_member_cap >= 0', name=op.f('ck_organizations_default_cap_non_negative')),
    sa.ForeignKeyConstraint(['created_by'], ['users.id'], name=op.f('fk_organizations_created_by_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_organizations'))
    )
    op.create_table('organization_invitations',
    sa.Column('id', BigId, nullable=False),
    sa.Column('organization_id', BigId, nullable=False),
    sa.Column('email', sa.String(length=254), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('invited_by', BigId, nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('accepted_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('accepted_by', BigId, nullable=True),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("role IN ('admin', 'member')", name=op.f('ck_organization_invitations_role_invitable')),
    sa.CheckConstraint('expires_at > created_at', name=op.f('ck_organization_invitations_expires_after_creation')),
    sa.ForeignKeyConstraint(['accepted_by'], ['users.id'], name=op.f('fk_organization_invitations_accepted_by_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['invited_by'], ['users.id'], name=op.f('fk_organization_invitations_invited_by_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['organization_id'], ['organizations.id'], name=op.f('fk_organization_invitations_organization_id_organizations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_organization_invitations')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_organization_invitations_token_hash'))
    )
    with op.batch_alter_table('organization_invitations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_organization_invitations_organization_id'), ['organization_id'], unique=False)

    op.create_table('organization_members',
    sa.Column('id', BigId, nullable=False),
    sa.Column('organization_id', BigId, nullable=False),
    sa.Column('user_id', BigId, nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('monthly_cap', sa.Integer(), nullable=True),
    sa.Column('credits_used', sa.Integer(), nullable=False),
    sa.Column('usage_period_start', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("role IN ('owner', 'admin', 'member')", name=op.f('ck_organization_members_role_known')),
    sa.CheckConstraint('credits_used >= 0', name=op.f('ck_organization_members_credits_used_non_negative')),
    sa.CheckConstraint('monthly_cap >= 0', name=op.f('ck_organization_members_cap_non_negative')),
    sa.ForeignKeyConstraint(['organization_id'], ['organizations.id'], name=op.f('fk_organization_members_organization_id_organizations'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_organization_members_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_organization_members')),
    sa.UniqueConstraint('organization_id', 'user_id', name='uq_organization_members_org_user')
    )
    with op.batch_alter_table('organization_members', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_organization_members_user_id'), ['user_id'], unique=False)
        batch_op.create_index('uq_organization_members_one_owner', ['organization_id'], unique=True, sqlite_where=sa.text("role = 'owner'"), postgresql_where=sa.text("role = 'owner'"))

    with _sqlite_rebuild():
        with op.batch_alter_table('credit_purchases', schema=None) as batch_op:
            batch_op.add_column(sa.Column('organization_id', BigId, nullable=True))
            batch_op.create_index(batch_op.f('ix_credit_purchases_organization_id'), ['organization_id'], unique=False)
            batch_op.create_foreign_key(batch_op.f('fk_credit_purchases_organization_id_organizations'), 'organizations', ['organization_id'], ['id'], ondelete='CASCADE')

        with op.batch_alter_table('usage_logs', schema=None) as batch_op:
            batch_op.add_column(sa.Column('organization_id', BigId, nullable=True))
            batch_op.create_index(batch_op.f('ix_usage_logs_organization_id'), ['organization_id'], unique=False)
            batch_op.create_foreign_key(batch_op.f('fk_usage_logs_organization_id_organizations'), 'organizations', ['organization_id'], ['id'], ondelete='CASCADE')

        with op.batch_alter_table('user_subscriptions', schema=None) as batch_op:
            batch_op.add_column(sa.Column('organization_id', BigId, nullable=True))
            batch_op.alter_column('user_id', existing_type=BigId, nullable=True)
            batch_op.create_unique_constraint(batch_op.f('uq_user_subscriptions_organization_id'), ['organization_id'])
            batch_op.create_foreign_key(batch_op.f('fk_user_subscriptions_organization_id_organizations'), 'organizations', ['organization_id'], ['id'], ondelete='CASCADE')
            batch_op.create_check_constraint(op.f('ck_user_subscriptions_one_owner'), ONE_OWNER)


def downgrade() -> None:
    op.execute(sa.text("DELETE FROM user_subscriptions WHERE organization_id IS NOT NULL"))
    with _sqlite_rebuild():
        with op.batch_alter_table('user_subscriptions', schema=None) as batch_op:
            batch_op.drop_constraint(op.f('ck_user_subscriptions_one_owner'), type_='check')
            batch_op.drop_constraint(batch_op.f('fk_user_subscriptions_organization_id_organizations'), type_='foreignkey')
            batch_op.drop_constraint(batch_op.f('uq_user_subscriptions_organization_id'), type_='unique')
            batch_op.alter_column('user_id', existing_type=BigId, nullable=False)
            batch_op.drop_column('organization_id')

        with op.batch_alter_table('usage_logs', schema=None) as batch_op:
            batch_op.drop_constraint(batch_op.f('fk_usage_logs_organization_id_organizations'), type_='foreignkey')
            batch_op.drop_index(batch_op.f('ix_usage_logs_organization_id'))
            batch_op.drop_column('organization_id')

        with op.batch_alter_table('credit_purchases', schema=None) as batch_op:
            batch_op.drop_constraint(batch_op.f('fk_credit_purchases_organization_id_organizations'), type_='foreignkey')
            batch_op.drop_index(batch_op.f('ix_credit_purchases_organization_id'))
            batch_op.drop_column('organization_id')

    with op.batch_alter_table('organization_members', schema=None) as batch_op:
        batch_op.drop_index('uq_organization_members_one_owner', sqlite_where=sa.text("role = 'owner'"), postgresql_where=sa.text("role = 'owner'"))
        batch_op.drop_index(batch_op.f('ix_organization_members_user_id'))

    op.drop_table('organization_members')
    with op.batch_alter_table('organization_invitations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_organization_invitations_organization_id'))

    op.drop_table('organization_invitations')
    op.drop_table('organizations')
