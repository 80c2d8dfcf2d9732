"""ruleset_versions: drop source_format, which nothing read

Revision ID: 0015_drop_ruleset_source_format
Revises: 0014_admin_search

Every reader of a version's source (the rules loader, the console, the API) reads it with the YAML
parser, which takes JSON too, so the stored label was written and never read. A downgrade labels
each version again as the code that wrote it did: JSON if the source parses as JSON, else YAML.
"""
import json

import sqlalchemy as sa
from alembic import op

revision = "0015_drop_ruleset_source_format"
down_revision = "0014_admin_search"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("ruleset_versions", schema=None) as batch_op:
        batch_op.drop_column("source_format")


def _source_format(source: str) -> str:
    try:
        json.loads(source)
        return "json"
    except ValueError:
        return "yaml"


def downgrade():
    with op.batch_alter_table("ruleset_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("source_format", sa.String(length=4), nullable=True))
    versions = sa.table("ruleset_versions", sa.column("version", sa.Integer), sa.column("source", sa.Text),
                        sa.column("source_format", sa.String(4)))
    connection = op.get_bind()
    for version, source in connection.execute(sa.select(versions.c.version, versions.c.source)).all():
        connection.execute(sa.update(versions).where(versions.c.version == version)
                           .values(source_format=_source_format(source)))
    with op.batch_alter_table("ruleset_versions", schema=None) as batch_op:
        batch_op.alter_column("source_format", existing_type=sa.String(length=4), nullable=False)
