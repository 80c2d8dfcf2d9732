"""disputes (issue #14 item 6)

Revision ID: 0021_disputes
Revises: 0020_merchant_rulesets

Reserved in the chain before the work was split; filled in by the change that needs it.
"""
revision = "0021_disputes"
down_revision = "0020_merchant_rulesets"
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    pass
