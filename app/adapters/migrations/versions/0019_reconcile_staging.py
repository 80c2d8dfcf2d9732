"""(reserved for work in progress: filled in by the change that needs it)

Revision ID: 0019_reconcile_staging
Revises: 0018_list_indexes
"""

revision = "0019_reconcile_staging"
down_revision = "0018_list_indexes"
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    pass
