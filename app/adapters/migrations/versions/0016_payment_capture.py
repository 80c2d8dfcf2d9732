"""authorize now, capture later; customer actions: a payment's capture_method, amount_captured,
capture_before (when the channel voids an uncaptured authorization), next_action (where the
customer completes a step such as 3-D Secure); statuses up to 20 characters (requires_capture)

Revision ID: 0016_payment_capture
Revises: 0015_drop_ruleset_source_format
"""
import sqlalchemy as sa
from alembic import op

revision = "0016_payment_capture"
down_revision = "0015_drop_ruleset_source_format"
branch_labels = None
depends_on = None


# Statuses up to 20 characters. SQLite does not enforce a VARCHAR's length (and copying the table
# to change it would rebuild operations' expression index): there only the new columns are added.
_STATUS_COLUMNS = ("operations", "channel_callbacks", "attempts")


def _resize_status(length_from: int, length_to: int) -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    for table in _STATUS_COLUMNS:
        op.alter_column(table, "status", existing_type=sa.String(length=length_from), type_=sa.String(length=length_to),
                        existing_nullable=False)


def upgrade():
    _resize_status(12, 20)
    op.add_column("operations", sa.Column("capture_method", sa.String(length=10), nullable=True))
    op.add_column("operations", sa.Column("amount_captured", sa.BigInteger(), nullable=True))
    op.add_column("operations", sa.Column("capture_before", sa.DateTime(), nullable=True))
    op.add_column("operations", sa.Column("next_action", sa.JSON(), nullable=True))


def downgrade():
    for column in ("next_action", "capture_before", "amount_captured", "capture_method"):
        op.drop_column("operations", column)
    _resize_status(20, 12)
