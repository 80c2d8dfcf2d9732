"""reconciliation_lines: a channel's statement staged for set-wise matching; attempts by channel and time

Revision ID: 0019_reconcile_staging
Revises: 0018_list_indexes

A reconciliation pass streams the channel's statement into reconciliation_lines (COPY on
PostgreSQL, batched inserts on SQLite) under its own load id, matches it against attempts and
operations in SQL, and deletes its rows. The table is unlogged on PostgreSQL: its rows live for one
pass, and a crash loses only a pass, which is run again; not writing them to the WAL halves the
cost of a load. ix_attempts_channel_updated: a pass reads the outcomes of its window (a minute, for
the near-real-time passes) without reading a channel's whole history. reconciliation_runs.summary:
what a run read and found (lines, matched, each class's count, totals by currency on both sides,
its duration), stored with the run.
"""
import sqlalchemy as sa
from alembic import op

revision = "0019_reconcile_staging"
down_revision = "0018_list_indexes"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "reconciliation_lines",
        sa.Column("load_id", sa.String(length=40), nullable=False),
        sa.Column("channel_reference", sa.String(length=200), nullable=False),
        sa.Column("operation", sa.String(length=20), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("fee", sa.BigInteger(), nullable=False),
        sa.Column("settled_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_reconciliation_lines_ref", "reconciliation_lines", ["load_id", "channel_reference"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE reconciliation_lines SET UNLOGGED")
    with op.batch_alter_table("attempts", schema=None) as batch_op:
        batch_op.create_index("ix_attempts_channel_updated", ["channel", "updated_at"], unique=False)
    with op.batch_alter_table("reconciliation_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("summary", sa.JSON(), nullable=True))


def downgrade():
    with op.batch_alter_table("reconciliation_runs", schema=None) as batch_op:
        batch_op.drop_column("summary")
    with op.batch_alter_table("attempts", schema=None) as batch_op:
        batch_op.drop_index("ix_attempts_channel_updated")
    op.drop_index("ix_reconciliation_lines_ref", table_name="reconciliation_lines")
    op.drop_table("reconciliation_lines")
