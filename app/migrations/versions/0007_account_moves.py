"""account_moves: system-account balance moves queued by postings and applied in batches (hot
accounts: no payment waits for another's lock on the merchant's settlement or fee account)

Revision ID: 0007_account_moves
Revises: 0006_continuous_reconciliation
"""
import sqlalchemy as sa
from alembic import op

revision = "0007_account_moves"
down_revision = "0006_continuous_reconciliation"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "account_moves",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("balance_type", sa.String(length=10), nullable=False),
        sa.Column("delta", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("account_moves")
