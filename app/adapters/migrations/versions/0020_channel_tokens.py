"""(reserved for work in progress: filled in by the change that needs it)

Revision ID: 0020_channel_tokens
Revises: 0019_reconcile_staging
"""

revision = "0020_channel_tokens"
down_revision = "0019_reconcile_staging"
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    pass
