"""reconciliation_run_issues: every run that found an issue, not only the first

Revision ID: 0025_run_issue_links
Revises: 0024_dispute_followups

An issue is one row per channel, kind and reference, and its run_id names the run that found it
first. The daily run over a day the near-real-time passes already compared finds their issues
again; its export must list them too, so each run's findings are linked here (backfilled with the
first finder of every issue recorded before).
"""
import sqlalchemy as sa
from alembic import op

revision = "0025_run_issue_links"
down_revision = "0024_dispute_followups"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "reconciliation_run_issues",
        sa.Column("run_id", sa.String(length=40), nullable=False),
        sa.Column("issue_id", sa.String(length=40), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "issue_id"),
    )
    op.execute("INSERT INTO reconciliation_run_issues (run_id, issue_id) "
               "SELECT run_id, id FROM reconciliation_issues WHERE run_id IS NOT NULL")


def downgrade():
    op.drop_table("reconciliation_run_issues")
