"""fewer index entries per payment: partial indexes where every reader reads a subset, one unread index gone

Revision ID: 0027_payment_indexes
Revises: 0026_channel_account_checks

Each write of a row adds an entry to every index the row is in, and a payment writes its
operation twice (the insert, then the settlement's compare-and-set, which changes the indexed
``status`` and so is never a HOT update): 16 indexes on ``operations`` made 32 index entries per
payment, most of PostgreSQL's work for that row (docs/benchmarks.md, issue #18 item 5). Here:

- ``ix_operations_due`` (status, next_query_at) holds only rows with a next query: its one reader,
  the status-query sweep (app.services.callbacks), asks for ``next_query_at IS NOT NULL``, and a
  final status clears it, so a settled payment's new row version adds no entry;
- ``ix_operations_payment_id`` (a refund's payment) and ``ix_operations_order`` (an order's
  payments and refunds) hold only rows that have one: every reader compares the column with a
  value (``=`` or ``IN``), which a NULL never matches; a payment without an order adds no entry;
- ``ix_events_relayed`` (the boolean, on every event) becomes ``ix_events_unrelayed``
  (created_at, id) over unrelayed events only: the relay's query (``relayed IS false`` in order of
  created_at, id) reads it in order, and marking an event relayed adds no entry;
- ``ix_journal_entries_merchant_id`` goes: no query reads journal entries by merchant, and
  merchants are never deleted (so the foreign key never needs it).

The predicates are written as each backend renders the queries' conditions, so that SQLite's
planner, which matches a partial index's terms against the query's, uses them too. A downgrade
puts the full indexes back. Alembic runs a revision inside a transaction, where PostgreSQL
refuses CREATE INDEX CONCURRENTLY; on a large live database build the new indexes by hand first
(CONCURRENTLY, under temporary names) and swap them in.
"""
import sqlalchemy as sa
from alembic import op

revision = "0027_payment_indexes"
down_revision = "0026_channel_account_checks"
branch_labels = None
depends_on = None

# (index, table, columns, predicate on PostgreSQL, on SQLite)
PARTIAL = [
    ("ix_operations_due", "operations", ["status", "next_query_at"], "next_query_at IS NOT NULL",
     "next_query_at IS NOT NULL"),
    ("ix_operations_payment_id", "operations", ["payment_id"], "payment_id IS NOT NULL", "payment_id IS NOT NULL"),
    ("ix_operations_order", "operations", ["order_id", "created_at", "id"], "order_id IS NOT NULL",
     "order_id IS NOT NULL"),
    ("ix_events_unrelayed", "events", ["created_at", "id"], "relayed IS false", "relayed IS 0"),
]
# What each partial index replaces: (index, table, columns)
FULL = [
    ("ix_operations_due", "operations", ["status", "next_query_at"]),
    ("ix_operations_payment_id", "operations", ["payment_id"]),
    ("ix_operations_order", "operations", ["order_id", "created_at", "id"]),
    ("ix_events_relayed", "events", ["relayed"]),
]


def upgrade() -> None:
    for name, table, _columns in FULL:
        op.drop_index(name, table_name=table)
    for name, table, columns, on_postgresql, on_sqlite in PARTIAL:
        op.create_index(name, table, columns, postgresql_where=sa.text(on_postgresql),
                        sqlite_where=sa.text(on_sqlite))
    op.drop_index("ix_journal_entries_merchant_id", table_name="journal_entries")


def downgrade() -> None:
    op.create_index("ix_journal_entries_merchant_id", "journal_entries", ["merchant_id"])
    for name, table, *_ in reversed(PARTIAL):
        op.drop_index(name, table_name=table)
    for name, table, columns in reversed(FULL):
        op.create_index(name, table, columns)
