"""livemode: test and live objects and keys kept apart

Revision ID: 0009_livemode
Revises: 0008_secrets_at_rest
"""
import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision = "0009_livemode"
down_revision = "0008_secrets_at_rest"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
