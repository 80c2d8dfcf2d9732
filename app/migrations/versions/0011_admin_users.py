"""admin console users and roles

Revision ID: 0011_admin_users
Revises: 0010_review_and_resolution
"""
import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision = "0011_admin_users"
down_revision = "0010_review_and_resolution"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
