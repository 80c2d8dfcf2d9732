"""orders: the merchant's sale, which payments and refunds name

Revision ID: 0017_orders
Revises: 0016_payment_capture

``orders`` keeps an order's sums (paid, in flight, refunded) and status, changed only by
compare-and-set on ``version``; its check constraint is the database's backstop for "never paid
beyond its amount". ``operations.order_id`` names a payment's order (a refund's is its
payment's), indexed with (created_at, id) so an order's payments and refunds are read in one
index range. The list of orders has an index per filter it serves fast (status, customer id),
each ending in (created_at, id) as 0018's do.

``order_id`` is added and dropped with plain ALTER TABLE, without a foreign key: SQLite cannot
drop a column a foreign key holds, and a batch copy of ``operations`` would drop a table other
tables' foreign keys refer to.
"""
import sqlalchemy as sa
from alembic import op

revision = "0017_orders"
down_revision = "0016_payment_capture"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "orders",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("merchant_id", sa.String(40), sa.ForeignKey("merchants.id"), nullable=False),
        sa.Column("livemode", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("reference", sa.String(200), nullable=False),
        sa.Column("customer", sa.JSON(), nullable=True),
        sa.Column("description", sa.String(1000), nullable=True),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("amount_paid", sa.BigInteger(), nullable=False),
        sa.Column("amount_in_flight", sa.BigInteger(), nullable=False),
        sa.Column("amount_refunded", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.String(200), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("merchant_id", "reference", name="uq_orders_reference"),
        sa.CheckConstraint("amount_paid + amount_in_flight <= amount AND amount_in_flight >= 0 "
                           "AND amount_refunded >= 0 AND amount_refunded <= amount_paid", name="ck_orders_amounts"),
    )
    op.create_index("ix_orders_list", "orders", ["merchant_id", "livemode", "created_at", "id"])
    # The list filtered by status or by customer id (``customer ->> 'id'``, as 0018 does for the others).
    op.create_index("ix_orders_list_status", "orders", ["merchant_id", "livemode", "status", "created_at", "id"])
    op.create_index("ix_orders_list_customer", "orders",
                    ["merchant_id", "livemode", sa.text("(customer ->> 'id')"), "created_at", "id"])
    op.add_column("operations", sa.Column("order_id", sa.String(40), nullable=True))
    op.create_index("ix_operations_order", "operations", ["order_id", "created_at", "id"])


def downgrade():
    op.drop_index("ix_operations_order", table_name="operations")
    op.drop_column("operations", "order_id")
    for index in ("ix_orders_list_customer", "ix_orders_list_status", "ix_orders_list"):
        op.drop_index(index, table_name="orders")
    op.drop_table("orders")
