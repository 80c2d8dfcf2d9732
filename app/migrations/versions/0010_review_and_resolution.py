"""review flag on operations a channel forgot; reconciliation issues resolved with a note

Revision ID: 0010_review_and_resolution
Revises: 0009_livemode
"""
import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision = "0010_review_and_resolution"
down_revision = "0009_livemode"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
