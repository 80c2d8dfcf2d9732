"""The Alembic migrations build exactly the schema the models describe (on the run's backend)."""
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from app.db import get_engine
from app.models import Base


def test_migrated_schema_matches_the_models(config):
    import app.webhooks.models  # noqa: F401 - their tables are part of the metadata too

    with get_engine(config).connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        diff = compare_metadata(context, Base.metadata)
    # The benchmark's own tables may sit in a benchmark database; nothing else may differ.
    diff = [d for d in diff if not (d[0] == "remove_table" and d[1].name.startswith("bench_"))]
    assert diff == []
