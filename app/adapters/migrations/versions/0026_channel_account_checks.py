"""(reserved for helper h1; replace this docstring with what the migration does, or leave it a no-op)

Revision ID: 0026_channel_account_checks
Revises: 0025_run_issue_links
"""

revision = "0026_channel_account_checks"
down_revision = "0025_run_issue_links"
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    pass
