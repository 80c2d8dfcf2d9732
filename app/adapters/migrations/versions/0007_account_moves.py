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
    # Moves still queued go to their accounts' rows first, so the rows keep equalling their lines.
    for balance in ("available", "pending"):
        op.execute(f"""
            UPDATE accounts SET {balance} = {balance} + (
                SELECT COALESCE(SUM(m.delta), 0) FROM account_moves m
                 WHERE m.account_id = accounts.id AND m.balance_type = '{balance}')
             WHERE id IN (SELECT account_id FROM account_moves WHERE balance_type = '{balance}')""")
    op.drop_table("account_moves")
