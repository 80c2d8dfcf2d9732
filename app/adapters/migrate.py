"""Schema creation and upgrades through Alembic (``payrouter init``)."""
from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig

from app.adapters.db import get_engine
from app.config import Config, get_config

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config() -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def upgrade(config: Config | None = None) -> None:
    """Create or migrate the schema to the newest revision; safe to run twice."""
    engine = get_engine(config or get_config())
    cfg = alembic_config()
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")


def autogenerate(message: str, config: Config | None = None) -> None:
    engine = get_engine(config or get_config())
    cfg = alembic_config()
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.revision(cfg, message=message, autogenerate=True)
