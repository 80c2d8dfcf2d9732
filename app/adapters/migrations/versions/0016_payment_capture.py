"""(reserved for work in progress: filled in by the change that needs it)

Revision ID: 0016_payment_capture
Revises: 0015_drop_ruleset_source_format
"""

revision = "0016_payment_capture"
down_revision = "0015_drop_ruleset_source_format"
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    pass
