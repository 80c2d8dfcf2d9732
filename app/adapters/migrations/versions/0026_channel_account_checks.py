"""channel account checks: a keyed digest of each account's credentials, unique per channel among
live accounts (two merchants cannot bring the same credentials), and whether the PSP took them

Existing live accounts get their digest here (decrypted under the app's key, the same config that
runs the migration); of two live accounts that already hold the same credentials, the older keeps
the digest and the newer none (it is not refused after the fact: delete one by hand). Existing
accounts are ``verified`` false: nobody asked the PSP when they were brought.

Revision ID: 0026_channel_account_checks
Revises: 0025_run_issue_links
"""
import json

import sqlalchemy as sa
from alembic import op

revision = "0026_channel_account_checks"
down_revision = "0025_run_issue_links"
branch_labels = None
depends_on = None

_LIVE = sa.text("deleted_at IS NULL")


def upgrade():
    with op.batch_alter_table("channel_accounts") as batch:
        batch.add_column(sa.Column("credentials_digest", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("verified", sa.Boolean(), server_default=sa.false(), nullable=False))
    from app.adapters import crypto  # the app's key: the same config that runs the migration
    from app.services.channel_accounts import credentials_digest

    connection, taken = op.get_bind(), set()
    for row in connection.execute(sa.text("SELECT id, channel, credentials_encrypted FROM channel_accounts "
                                          "WHERE deleted_at IS NULL ORDER BY created_at, id")).all():
        digest = credentials_digest(json.loads(crypto.decrypt(row.credentials_encrypted)))
        if (row.channel, digest) in taken:
            continue
        taken.add((row.channel, digest))
        connection.execute(sa.text("UPDATE channel_accounts SET credentials_digest = :d WHERE id = :id"),
                           {"d": digest, "id": row.id})
    op.create_index("uq_channel_accounts_credentials", "channel_accounts", ["channel", "credentials_digest"],
                    unique=True, postgresql_where=_LIVE, sqlite_where=_LIVE)


def downgrade():
    op.drop_index("uq_channel_accounts_credentials", table_name="channel_accounts")
    with op.batch_alter_table("channel_accounts") as batch:
        batch.drop_column("verified")
        batch.drop_column("credentials_digest")
