"""merchant rule sets (issue #17 item 3)

Revision ID: 0020_merchant_rulesets
Revises: 0019_reconcile_staging

A version and a publication belong to the platform (merchant_id NULL) or to one merchant; each owner's
newest publication is its live version, found through (merchant_id, id).
"""
import sqlalchemy as sa
from alembic import op

revision = "0020_merchant_rulesets"
down_revision = "0019_reconcile_staging"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("ruleset_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("merchant_id", sa.String(length=40), nullable=True))
    with op.batch_alter_table("ruleset_publications", schema=None) as batch_op:
        batch_op.add_column(sa.Column("merchant_id", sa.String(length=40), nullable=True))
        batch_op.create_index("ix_ruleset_publications_merchant", ["merchant_id", "id"], unique=False)


def downgrade():
    with op.batch_alter_table("ruleset_publications", schema=None) as batch_op:
        batch_op.drop_index("ix_ruleset_publications_merchant")
        batch_op.drop_column("merchant_id")
    with op.batch_alter_table("ruleset_versions", schema=None) as batch_op:
        batch_op.drop_column("merchant_id")
