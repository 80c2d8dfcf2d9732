"""merchant lists: an index per filter, each ending in the list's order; keys the merchant manages

Revision ID: 0018_list_indexes
Revises: 0017_orders

A merchant's list always filters by merchant and mode (and an operation's by kind), then pages
newest first by the row comparison ``(created_at, id) < (:t, :id)``. A filter is fast at any
depth only if one index holds the list's equalities, then the filter, then (created_at, id):
the row comparison is then an index condition, and a page reads its own rows. This revision
adds those for the filters a plain list index cannot serve:

- operations by status, by channel and by customer id (``customer ->> 'id'``: the same
  expression on PostgreSQL and SQLite ≥ 3.38), within merchant, mode and kind;
- accounts by customer id, within merchant and mode.

The others are served already: ``reference`` by the unique (merchant, kind, reference)
constraints, ``payment`` by ix_operations_payment_id (a payment has few refunds), ``order`` by
the orders revision's ix_operations_order (0017), ``created[gte]``/``created[lt]`` by each list
index itself.

The merchant's own keys (/v1/api_keys) add two columns to ``api_keys``: ``expires_at`` (a
chosen expiry, or the end of a rolled key's overlap) and ``last_used_at`` (to the minute).
Both are nullable: existing keys keep no expiry and show no last use until they are used.

Alembic runs a revision inside a transaction, where PostgreSQL refuses CREATE INDEX
CONCURRENTLY; a plain CREATE INDEX blocks writes to the table while it builds. On a large live
database, create these by hand with CREATE INDEX CONCURRENTLY before upgrading (same names and
columns); ``IF NOT EXISTS`` then makes this revision a no-op.
"""
import sqlalchemy as sa
from alembic import op

revision = "0018_list_indexes"
down_revision = "0017_orders"
branch_labels = None
depends_on = None

CUSTOMER_ID = "(customer ->> 'id')"

# (index, table, columns: a string in parentheses is an SQL expression)
INDEXES = [
    ("ix_operations_list_status", "operations", ["merchant_id", "livemode", "kind", "status", "created_at", "id"]),
    ("ix_operations_list_channel", "operations", ["merchant_id", "livemode", "kind", "channel", "created_at", "id"]),
    ("ix_operations_list_customer", "operations",
     ["merchant_id", "livemode", "kind", CUSTOMER_ID, "created_at", "id"]),
    ("ix_accounts_list_customer", "accounts", ["merchant_id", "livemode", CUSTOMER_ID, "created_at", "id"]),
]


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("expires_at", sa.DateTime(), nullable=True))
    op.add_column("api_keys", sa.Column("last_used_at", sa.DateTime(), nullable=True))
    for name, table, columns in INDEXES:
        op.create_index(name, table, [sa.text(c) if c.startswith("(") else c for c in columns], unique=False,
                        if_not_exists=True)


def downgrade() -> None:
    for name, table, _ in reversed(INDEXES):
        op.drop_index(name, table_name=table, if_exists=True)
    op.drop_column("api_keys", "last_used_at")
    op.drop_column("api_keys", "expires_at")
