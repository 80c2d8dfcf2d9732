"""circuit breakers: manual overrides every process obeys

Revision ID: 0013_circuit_overrides
Revises: 0012_rules_workspace
"""
import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision = "0013_circuit_overrides"
down_revision = "0012_rules_workspace"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
