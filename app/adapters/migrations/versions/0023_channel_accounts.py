"""merchant channel accounts (issue #14 item 8)

Revision ID: 0023_channel_accounts
Revises: 0022_channels_in_db

Reserved in the chain before the work was split; filled in by the change that needs it.
"""
revision = "0023_channel_accounts"
down_revision = "0022_channels_in_db"
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    pass
