"""``payrouter init``: schema, default channels and rules. Safe to run twice."""
from __future__ import annotations

from app.adapters import migrate
from app.config import get_config


def init() -> dict:
    config = get_config()
    config.var_dir.mkdir(parents=True, exist_ok=True)
    migrate.upgrade(config)
    summary = {"database": config.database_url.split("@")[-1], "schema": "up to date"}
    from app.services import channel_import

    imported = channel_import.import_file(config.channels_file, "payrouter init", reason="payrouter init")
    summary["channels"] = {k: imported[k] for k in ("added", "changed", "unchanged", "kept")}
    summary["generated_channel_secrets"] = imported["generated_channel_secrets"]
    from app.services.rules_store import seed_default_rules

    summary.update(seed_default_rules())
    return summary
