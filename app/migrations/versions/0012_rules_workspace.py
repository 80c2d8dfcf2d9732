"""rules workspace: publication reasons, drafts awaiting approval

Revision ID: 0012_rules_workspace
Revises: 0011_admin_users
"""
import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision = "0012_rules_workspace"
down_revision = "0011_admin_users"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
