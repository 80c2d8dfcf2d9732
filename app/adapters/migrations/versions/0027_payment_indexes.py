"""(reserved for helper h1; replace this docstring with what the migration does, or leave it a no-op)

Revision ID: 0027_payment_indexes
Revises: 0026_channel_account_checks
"""

revision = "0027_payment_indexes"
down_revision = "0026_channel_account_checks"
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    pass
