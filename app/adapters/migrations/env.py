"""Alembic environment: the URL comes from the one Config object (or the caller)."""
from alembic import context

import app.adapters.webhook_models  # noqa: F401,E402  (webhook tables)
from app.adapters.models import Base

config = context.config


def run_migrations_online() -> None:
    connectable = config.attributes.get("connection")
    if connectable is None:
        from app.adapters.db import get_engine

        with get_engine().connect() as connection:
            _run(connection)
            connection.commit()
    else:
        _run(connectable)


def _run(connection) -> None:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


run_migrations_online()
