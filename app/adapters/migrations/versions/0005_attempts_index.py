"""attempts: drop ix_attempts_operation_id (uq_attempts_seq on (operation_id, seq) serves the same
lookups), one index fewer to maintain on every attempt written and updated

Revision ID: 0005_attempts_index
Revises: 0004_reconciliation
"""
from alembic import op

revision = "0005_attempts_index"
down_revision = "0004_reconciliation"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("attempts", schema=None) as batch_op:
        batch_op.drop_index("ix_attempts_operation_id")


def downgrade() -> None:
    with op.batch_alter_table("attempts", schema=None) as batch_op:
        batch_op.create_index("ix_attempts_operation_id", ["operation_id"], unique=False)
