"""(reserved for helper h4; replace this docstring with what the migration does, or leave it a no-op)

Revision ID: 0029_payment_path
Revises: 0028_dispute_race
"""

revision = "0029_payment_path"
down_revision = "0028_dispute_race"
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    pass
