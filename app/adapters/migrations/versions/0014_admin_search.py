"""admin console: the indexes its search, timeline and dashboard read by

Revision ID: 0014_admin_search
Revises: 0013_circuit_overrides

The merchant API always filters by merchant and mode; the console searches across merchants,
newest first (keyset on created_at, id), by one field or a few. Each index serves one filter
that would otherwise read the whole table at 1,000,000 operations (bench/admin.py):

- operations newest first, alone or by a date range, and the dashboard's last 24 h;
- operations by status, by channel, by merchant (any kind or mode), each newest first;
- operations and transfers by reference (any merchant), operations by customer id
  (``customer ->> 'id'``: the same expression on PostgreSQL and SQLite ≥ 3.38);
- an operation's callbacks (the channel echoes our reference: the operation id);
- webhook deliveries, reconciliation runs and open issues, newest first.

On a large live database, create these by hand with CREATE INDEX CONCURRENTLY before upgrading
(same names); ``IF NOT EXISTS`` then makes this revision a no-op.
"""
import sqlalchemy as sa
from alembic import op

revision = "0014_admin_search"
down_revision = "0013_circuit_overrides"
branch_labels = None
depends_on = None

# (index, table, columns or one SQL expression)
INDEXES = [
    ("ix_operations_created", "operations", ["created_at", "id"]),
    ("ix_operations_status_created", "operations", ["status", "created_at", "id"]),
    ("ix_operations_channel_created", "operations", ["channel", "created_at", "id"]),
    ("ix_operations_merchant_created", "operations", ["merchant_id", "created_at", "id"]),
    ("ix_operations_reference", "operations", ["reference"]),
    ("ix_operations_customer", "operations", "(customer ->> 'id')"),
    ("ix_transfers_created", "transfers", ["created_at", "id"]),
    ("ix_transfers_reference", "transfers", ["reference"]),
    ("ix_channel_callbacks_reference", "channel_callbacks", ["reference"]),
    ("ix_webhook_deliveries_created", "webhook_deliveries", ["created_at", "id"]),
    ("ix_reconciliation_runs_created", "reconciliation_runs", ["created_at", "id"]),
    ("ix_reconciliation_issues_status_created", "reconciliation_issues", ["status", "created_at", "id"]),
]


def upgrade() -> None:
    for name, table, columns in INDEXES:
        if isinstance(columns, str):
            op.create_index(name, table, [sa.text(columns)], unique=False, if_not_exists=True)
        else:
            op.create_index(name, table, columns, unique=False, if_not_exists=True)


def downgrade() -> None:
    for name, table, _ in reversed(INDEXES):
        op.drop_index(name, table_name=table, if_exists=True)
