"""channel definitions in the database (issue #14 item 7)

Revision ID: 0022_channels_in_db
Revises: 0021_disputes

``channels`` holds each channel's definition as the channels file gave it (``definition``: one
item of the file, ``${VAR}`` references unexpanded, so each process expands them from its own
environment), in file order (``position``). ``payrouter init`` and ``payrouter channels import
FILE`` write it; every process reloads its channels from it within 2 s of a change.
"""
import sqlalchemy as sa
from alembic import op

revision = "0022_channels_in_db"
down_revision = "0021_disputes"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "channels",
        sa.Column("id", sa.String(63), primary_key=True),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("definition", sa.JSON(), nullable=False),
        sa.Column("updated_by", sa.String(200), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )


def downgrade():
    op.drop_table("channels")
