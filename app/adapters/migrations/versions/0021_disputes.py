"""disputes (issue #14 item 6): chargebacks reported by channels

Revision ID: 0021_disputes
Revises: 0020_merchant_rulesets

``disputes`` (``dp_…``): a chargeback a payment's channel reported, one row per channel and the
channel's dispute reference (the unique key that makes a repeated report change nothing), its
status changed only by compare-and-set on ``version``. The list has an index per filter it serves
(status, payment), each ending in (created_at, id) as 0018's do.
``channel_callbacks.dispute``: what a callback reporting a dispute says of it (None for an
operation's callback), kept in the inbox like the rest of the callback.
``reconciliation_lines.status`` widened to 20 characters: a statement's dispute line carries the
dispute's status (``needs_response`` is 14).
"""
import sqlalchemy as sa
from alembic import op

revision = "0021_disputes"
down_revision = "0020_merchant_rulesets"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "disputes",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("merchant_id", sa.String(40), sa.ForeignKey("merchants.id"), nullable=False),
        sa.Column("livemode", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("payment_id", sa.String(40), sa.ForeignKey("operations.id"), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("reason", sa.String(60), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(100), nullable=False),
        sa.Column("channel_reference", sa.String(200), nullable=False),
        sa.Column("request_id", sa.String(200), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("closed_at", sa.DateTime(), nullable=True),
        sa.UniqueConstraint("channel", "channel_reference", name="uq_disputes_channel_reference"),
    )
    op.create_index("ix_disputes_list", "disputes", ["merchant_id", "livemode", "created_at", "id"])
    op.create_index("ix_disputes_list_status", "disputes", ["merchant_id", "livemode", "status", "created_at", "id"])
    op.create_index("ix_disputes_list_payment", "disputes",
                    ["merchant_id", "livemode", "payment_id", "created_at", "id"])
    op.add_column("channel_callbacks", sa.Column("dispute", sa.JSON(), nullable=True))
    with op.batch_alter_table("reconciliation_lines") as batch_op:
        batch_op.alter_column("status", existing_type=sa.String(12), type_=sa.String(20), existing_nullable=False)


def downgrade():
    with op.batch_alter_table("reconciliation_lines") as batch_op:
        batch_op.alter_column("status", existing_type=sa.String(20), type_=sa.String(12), existing_nullable=False)
    op.drop_column("channel_callbacks", "dispute")
    for index in ("ix_disputes_list_payment", "ix_disputes_list_status", "ix_disputes_list"):
        op.drop_index(index, table_name="disputes")
    op.drop_table("disputes")
