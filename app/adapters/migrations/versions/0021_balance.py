"""(reserved for work in progress: filled in by the change that needs it)

Revision ID: 0021_balance
Revises: 0020_channel_tokens
"""

revision = "0021_balance"
down_revision = "0020_channel_tokens"
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    pass
