"""merchant channel accounts (issue #14 item 8): a merchant's own credentials for a channel
(``channel_accounts``, encrypted), which account carried each attempt and operation, and which
account's statement a reconciliation run read

Revision ID: 0023_channel_accounts
Revises: 0022_channels_in_db
"""
import sqlalchemy as sa
from alembic import op

revision = "0023_channel_accounts"
down_revision = "0022_channels_in_db"
branch_labels = None
depends_on = None

_LIVE = sa.text("deleted_at IS NULL")


def upgrade():
    op.create_table(
        "channel_accounts",
        sa.Column("id", sa.String(length=40), primary_key=True),
        sa.Column("merchant_id", sa.String(length=40), sa.ForeignKey("merchants.id"), nullable=False),
        sa.Column("livemode", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("channel", sa.String(length=100), nullable=False),
        sa.Column("credentials_encrypted", sa.Text(), nullable=False),
        sa.Column("credential_fields", sa.JSON(), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("deleted_at", sa.DateTime(), nullable=True),
        sa.Column("request_id", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_channel_accounts_list", "channel_accounts", ["merchant_id", "livemode", "created_at", "id"])
    op.create_index("uq_channel_accounts_live", "channel_accounts", ["merchant_id", "livemode", "channel"],
                    unique=True, postgresql_where=_LIVE, sqlite_where=_LIVE)
    for table in ("operations", "attempts"):
        op.add_column(table, sa.Column("channel_account_id", sa.String(length=40), nullable=True))
    op.add_column("reconciliation_runs", sa.Column("channel_account", sa.String(length=40), nullable=True))


def downgrade():
    op.drop_column("reconciliation_runs", "channel_account")
    for table in ("attempts", "operations"):
        op.drop_column(table, "channel_account_id")
    op.drop_index("uq_channel_accounts_live", table_name="channel_accounts")
    op.drop_index("ix_channel_accounts_list", table_name="channel_accounts")
    op.drop_table("channel_accounts")
