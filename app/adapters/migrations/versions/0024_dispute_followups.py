"""dispute follow-ups: what a dispute carries as every object does, and what it needs to be
reconciled both ways (its channel account)

Revision ID: 0024_dispute_followups
Revises: 0023_channel_accounts

``disputes.reference`` and ``disputes.metadata`` (contract §1: every object carries them): a
dispute is the channel's object, so ``reference`` is NULL and ``metadata`` ``{}`` (the API keeps
them read-only, as the contract lists only GETs for disputes); ``reference`` is unique per merchant
(NULLs are distinct), the constraint also serving the list's ``reference`` filter.
``disputes.channel_account_id``: the merchant channel account (0023) of the disputed payment, NULL
for the platform's: which statement must list the dispute (``missing_at_channel``).
"""
import sqlalchemy as sa
from alembic import op

revision = "0024_dispute_followups"
down_revision = "0023_channel_accounts"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("disputes", sa.Column("reference", sa.String(200), nullable=True))
    op.add_column("disputes", sa.Column("metadata", sa.JSON(), server_default=sa.text("'{}'"), nullable=False))
    op.add_column("disputes", sa.Column("channel_account_id", sa.String(40), nullable=True))
    op.create_index("uq_disputes_reference", "disputes", ["merchant_id", "reference"], unique=True)
    # A dispute opened before this revision is of its payment's account.
    op.execute("UPDATE disputes SET channel_account_id = (SELECT operations.channel_account_id FROM operations "
               "WHERE operations.id = disputes.payment_id)")


def downgrade():
    op.drop_index("uq_disputes_reference", table_name="disputes")
    for column in ("channel_account_id", "metadata", "reference"):
        op.drop_column("disputes", column)
