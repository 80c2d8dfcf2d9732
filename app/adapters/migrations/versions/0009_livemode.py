"""livemode: test and live objects and keys kept apart

Revision ID: 0009_livemode
Revises: 0008_secrets_at_rest

Every object a merchant sees (accounts, transfers, operations, events, webhook endpoints and
deliveries) gets ``livemode``; the rows already there were made with test keys (a live key
could not reach a live channel yet), so they become test rows. Each list index leads with
(merchant_id, livemode): a list filters by both, then pages by (created_at, id).

Columns are added and dropped with plain ALTER TABLE (SQLite has both): a batch copy of
``accounts`` or ``operations`` would drop a table other tables' foreign keys refer to.
"""
import sqlalchemy as sa
from alembic import op

revision = "0009_livemode"
down_revision = "0008_secrets_at_rest"
branch_labels = None
depends_on = None

# table → (list index, its columns before this revision; livemode goes after merchant_id)
LISTS = {
    "accounts": ("ix_accounts_list", ["merchant_id", "created_at", "id"]),
    "transfers": ("ix_transfers_list", ["merchant_id", "created_at", "id"]),
    "operations": ("ix_operations_list", ["merchant_id", "kind", "created_at", "id"]),
    "events": ("ix_events_list", ["merchant_id", "created_at", "id"]),
    "webhook_endpoints": ("ix_webhook_endpoints_list", ["merchant_id", "created_at", "id"]),
    "webhook_deliveries": ("ix_webhook_deliveries_list", ["merchant_id", "created_at", "id"]),
}


def upgrade() -> None:
    for table, (index, columns) in LISTS.items():
        op.add_column(table, sa.Column("livemode", sa.Boolean(), server_default=sa.false(), nullable=False))
        op.drop_index(index, table_name=table)
        op.create_index(index, table, [columns[0], "livemode", *columns[1:]], unique=False)


def downgrade() -> None:
    # Live money must not silently turn into test money: refuse while any live row exists.
    connection = op.get_bind()
    for table in LISTS:
        if connection.execute(sa.text(f"SELECT 1 FROM {table} WHERE livemode = :live LIMIT 1"),
                              {"live": True}).first():
            raise RuntimeError(f"cannot downgrade below 0009_livemode: {table} holds live-mode rows")
    for table, (index, columns) in LISTS.items():
        op.drop_index(index, table_name=table)
        op.create_index(index, table, columns, unique=False)
        op.drop_column(table, "livemode")
