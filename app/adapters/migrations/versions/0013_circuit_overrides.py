"""circuit breakers: manual overrides every process obeys; how long each channel call took

circuit_overrides: a row per channel whose circuit an operator opened by hand (app.services.circuit_overrides).
attempts.duration_ms: the channel's answer time, for the p95 latency of the "Channels" page;
ix_attempts_created: that page's 15-minute window.

Revision ID: 0013_circuit_overrides
Revises: 0012_rules_workspace
"""
import sqlalchemy as sa
from alembic import op

revision = "0013_circuit_overrides"
down_revision = "0012_rules_workspace"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "circuit_overrides",
        sa.Column("channel", sa.String(length=100), nullable=False),
        sa.Column("opened_by", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.String(length=1000), nullable=False),
        sa.Column("opened_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("channel"),
    )
    with op.batch_alter_table("attempts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("duration_ms", sa.Integer(), nullable=True))
        batch_op.create_index("ix_attempts_created", ["created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("attempts", schema=None) as batch_op:
        batch_op.drop_index("ix_attempts_created")
        batch_op.drop_column("duration_ms")
    op.drop_table("circuit_overrides")
