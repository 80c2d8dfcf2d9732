"""dispute follow-ups: what a dispute needs to be reconciled both ways (its channel account)

Revision ID: 0024_dispute_followups
Revises: 0023_channel_accounts

Reserved in the chain before the work was split; filled in by the change that needs it.
"""
revision = "0024_dispute_followups"
down_revision = "0023_channel_accounts"
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    pass
