"""reconciliation runs: mode (daily | continuous), the window each run compared, and its number
of issues (filterable in SQL)

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
        batch_op.add_column(sa.Column("issue_count", sa.Integer(), nullable=False, server_default="0"))
        batch_op.create_index("ix_reconciliation_runs_window", ["channel", "mode", "window_end"], unique=False)
    # Runs stored before this revision: count their issues (json_array_length on both backends).
    op.execute("UPDATE reconciliation_runs SET issue_count = json_array_length(issues)")
    with op.batch_alter_table("reconciliation_runs", schema=None) as batch_op:
        batch_op.alter_column("mode", server_default=None)
        batch_op.alter_column("issue_count", server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("reconciliation_runs", schema=None) as batch_op:
        batch_op.drop_index("ix_reconciliation_runs_window")
        batch_op.drop_column("issue_count")
        batch_op.drop_column("window_end")
        batch_op.drop_column("window_start")
        batch_op.drop_column("mode")
