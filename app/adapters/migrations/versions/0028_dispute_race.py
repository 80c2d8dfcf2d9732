"""(reserved for helper h3; replace this docstring with what the migration does, or leave it a no-op)

Revision ID: 0028_dispute_race
Revises: 0027_channel_build_reports
"""

revision = "0028_dispute_race"
down_revision = "0027_channel_build_reports"
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    pass
