"""roles and permissions (and each user's, kept on the user's row), user and app metadata,
admin scopes of clients

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("app_metadata", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("user_metadata", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("held_roles", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("held_permissions", sa.Text(), nullable=True))
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("scopes", sa.String(length=255), nullable=False, server_default="")
        )
    op.create_table(
        "roles",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("permissions", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "user_roles",
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("role", sa.String(length=64), nullable=False),
        sa.Column("granted_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["role"], ["roles.name"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("user_id", "role"),
    )
    with op.batch_alter_table("user_roles", schema=None) as batch_op:
        batch_op.create_index("ix_user_roles_role", ["role"])
    with op.batch_alter_table("users", schema=None) as batch_op:
        # The admin API pages users by (created_at, id).
        batch_op.create_index("ix_users_created_at_id", ["created_at", "id"])


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_index("ix_users_created_at_id")
    op.drop_table("user_roles")
    op.drop_table("roles")
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.drop_column("scopes")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("held_permissions")
        batch_op.drop_column("held_roles")
        batch_op.drop_column("user_metadata")
        batch_op.drop_column("app_metadata")
