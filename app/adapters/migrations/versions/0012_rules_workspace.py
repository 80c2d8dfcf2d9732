"""rules workspace: publication reasons, drafts awaiting approval

Revision ID: 0012_rules_workspace
Revises: 0011_admin_users
"""
import sqlalchemy as sa
from alembic import op

revision = "0012_rules_workspace"
down_revision = "0011_admin_users"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A publication made by approval names the second person; the reason was kept since 0001.
    with op.batch_alter_table("ruleset_publications", schema=None) as batch_op:
        batch_op.add_column(sa.Column("approved_by", sa.String(length=200), nullable=True))
    op.create_table(
        "ruleset_requests",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("merchant_id", sa.String(length=40), nullable=True),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("checksum", sa.String(length=64), nullable=False),
        sa.Column("author", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.String(length=1000), nullable=False),
        sa.Column("dropped", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("decided_by", sa.String(length=200), nullable=True),
        sa.Column("decided_at", sa.DateTime(), nullable=True),
        sa.Column("note", sa.String(length=1000), nullable=True),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["version"], ["ruleset_versions.version"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("ruleset_requests", schema=None) as batch_op:
        batch_op.create_index("ix_ruleset_requests_status", ["status", "merchant_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("ruleset_requests", schema=None) as batch_op:
        batch_op.drop_index("ix_ruleset_requests_status")
    op.drop_table("ruleset_requests")
    with op.batch_alter_table("ruleset_publications", schema=None) as batch_op:
        batch_op.drop_column("approved_by")
