"""reconciliation runs: mode (daily | continuous) and the window each run compared

Revision ID: 0006_continuous_reconciliation
Revises: 0005_attempts_index
"""
import sqlalchemy as sa
from alembic import op

revision = "0006_continuous_reconciliation"
down_revision = "0005_attempts_index"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("reconciliation_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("mode", sa.String(length=12), nullable=False, server_default="daily"))
        batch_op.add_column(sa.Column("window_start", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("window_end", sa.DateTime(), nullable=True))
        batch_op.create_index("ix_reconciliation_runs_window", ["channel", "mode", "window_end"], unique=False)
    with op.batch_alter_table("reconciliation_runs", schema=None) as batch_op:
        batch_op.alter_column("mode", server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("reconciliation_runs", schema=None) as batch_op:
        batch_op.drop_index("ix_reconciliation_runs_window")
        batch_op.drop_column("window_end")
        batch_op.drop_column("window_start")
        batch_op.drop_column("mode")
