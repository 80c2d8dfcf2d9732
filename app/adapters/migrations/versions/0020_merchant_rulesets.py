"""merchant rule sets (issue #17 item 3)

Revision ID: 0020_merchant_rulesets
Revises: 0019_reconcile_staging

Reserved in the chain before the work was split; filled in by the change that needs it.
"""
revision = "0020_merchant_rulesets"
down_revision = "0019_reconcile_staging"
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    pass
