"""review flag on operations a channel forgot; reconciliation issues resolved with a note

Revision ID: 0010_review_and_resolution
Revises: 0009_livemode
"""
import sqlalchemy as sa
from alembic import op

revision = "0010_review_and_resolution"
down_revision = "0009_livemode"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("operations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("review", sa.Boolean(), nullable=False, server_default=sa.false()))
    # A fee is charged only on success: failed (and canceled) operations written before now carry none.
    op.execute("UPDATE operations SET fee = 0 WHERE status IN ('failed', 'canceled') AND fee <> 0")
    op.create_table(
        "reconciliation_issues",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("run_id", sa.String(length=40), nullable=True),
        sa.Column("channel", sa.String(length=100), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("channel_reference", sa.String(length=200), nullable=False),
        sa.Column("operation_id", sa.String(length=40), nullable=True),
        sa.Column("ours", sa.JSON(), nullable=True),
        sa.Column("theirs", sa.JSON(), nullable=True),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("resolved_by", sa.String(length=200), nullable=True),
        sa.Column("resolved_at", sa.DateTime(), nullable=True),
        sa.Column("resolution_note", sa.String(length=1000), nullable=True),
        sa.Column("request_id", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("channel", "kind", "channel_reference", name="uq_reconciliation_issues_key"),
    )
    with op.batch_alter_table("reconciliation_issues", schema=None) as batch_op:
        batch_op.create_index("ix_reconciliation_issues_open", ["status", "channel"], unique=False)
        batch_op.create_index("ix_reconciliation_issues_operation_id", ["operation_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("reconciliation_issues", schema=None) as batch_op:
        batch_op.drop_index("ix_reconciliation_issues_operation_id")
        batch_op.drop_index("ix_reconciliation_issues_open")
    op.drop_table("reconciliation_issues")
    with op.batch_alter_table("operations", schema=None) as batch_op:
        batch_op.drop_column("review")
