"""channel definitions in the database (issue #14 item 7)

Revision ID: 0022_channels_in_db
Revises: 0021_disputes

Reserved in the chain before the work was split; filled in by the change that needs it.
"""
revision = "0022_channels_in_db"
down_revision = "0021_disputes"
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    pass
