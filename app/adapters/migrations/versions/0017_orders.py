"""(reserved for work in progress: filled in by the change that needs it)

Revision ID: 0017_orders
Revises: 0016_payment_capture
"""

revision = "0017_orders"
down_revision = "0016_payment_capture"
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    pass
