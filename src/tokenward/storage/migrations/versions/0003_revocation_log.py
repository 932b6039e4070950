"""revocation log: ended sessions numbered in commit order

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "revocations",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("session_id", sa.String(length=36), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("revocations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_revocations_revoked_at"), ["revoked_at"])
    # Sessions ended before the upgrade, oldest first: the feed's first page still shows them.
    op.execute(
        "INSERT INTO revocations (session_id, revoked_at) SELECT id, revoked_at FROM sessions"
        " WHERE revoked_at IS NOT NULL ORDER BY revoked_at, id"
    )


def downgrade() -> None:
    with op.batch_alter_table("revocations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_revocations_revoked_at"))
    op.drop_table("revocations")
