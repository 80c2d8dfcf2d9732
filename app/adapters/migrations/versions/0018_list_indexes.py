"""(reserved for work in progress: filled in by the change that needs it)

Revision ID: 0018_list_indexes
Revises: 0017_orders
"""

revision = "0018_list_indexes"
down_revision = "0017_orders"
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    pass
