"""(reserved for helper h3; replace this docstring with what the migration does, or leave it a no-op)

Revision ID: 0028_payment_path
Revises: 0027_channel_safety
"""

revision = "0028_payment_path"
down_revision = "0027_channel_safety"
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    pass
