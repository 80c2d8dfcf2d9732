"""Engine, sessions and the unit of work. The same code runs on SQLite and PostgreSQL."""
from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Callable

from sqlalchemy import create_engine, event, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.orm import Session, make_transient_to_detached, sessionmaker
from sqlalchemy.orm.attributes import instance_dict

from app.config import Config, get_config

PING_IDLE_SECONDS = 5.0  # a pooled connection idle longer than this is pinged before use
_lock = threading.Lock()
_engines: dict[str, Engine] = {}
_factories: dict[str, sessionmaker] = {}


def _make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            # Autocommit at the driver level so SQLAlchemy's BEGIN below is the only one.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):
            # Take the write lock up front: SQLite cannot upgrade a read lock under
            # contention without failing, so every writing transaction is serialised.
            # Read-only sessions (read_only()) take no lock: WAL lets them read beside a writer.
            readonly = conn.get_execution_options().get("payrouter_readonly")
            conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")

        return engine
    # LIFO: the connection used last is used next, so a quiet process keeps reusing one warm
    # connection and only those left idle in the pool are pinged (below) before use. Positional
    # parameters ("format"): psycopg takes them as they come instead of reordering a dict per
    # statement, client CPU spent on every statement for nothing (docs/benchmarks.md).
    # A database host that drops packets (instead of refusing) must not hold a request for the
    # kernel's TCP timeout: a connection attempt gives up after 5 s (503 service_unavailable) unless
    # the URL sets its own connect_timeout.
    connect_args = {} if "connect_timeout=" in url else {"connect_timeout": 5}
    engine = create_engine(url, pool_size=10, max_overflow=20, pool_use_lifo=True, paramstyle="format",
                           connect_args=connect_args)

    # Pre-ping, but only a connection that sat in the pool for a while: one kept busy was just
    # used, and pinging it would cost every request a round trip. A failed ping gives that
    # connection up and the pool hands out another; a connection that died while busy fails its
    # statement, and SQLAlchemy then drops every connection opened before it.
    @event.listens_for(engine, "checkin")
    def _idle_since(_dbapi_conn, record):
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_conn, record, _proxy):
        if time.monotonic() - record.info.get("idle_since", time.monotonic()) < PING_IDLE_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:  # noqa: BLE001 - any failure: this connection is gone
            raise DisconnectionError(str(exc)) from exc

    return engine


def get_engine(config: Config | None = None) -> Engine:
    url = (config or get_config()).database_url
    with _lock:
        if url not in _engines:
            _engines[url] = _make_engine(url)
            _factories[url] = sessionmaker(_engines[url], expire_on_commit=False)
        return _engines[url]


def wait_for_database(seconds: float, said: Callable[[str], None], config: Config | None = None) -> None:
    """Return once the database answers ``SELECT 1``, trying every second for up to ``seconds``; each
    failure is ``said`` (a log line). Raises DatabaseUnreachable, naming the database and the last
    reason, when it never answered: a process that needs the database to start exits with that one
    line instead of a traceback, and an orchestrator restarting it does not loop on stack traces."""
    engine = get_engine(config)
    where = engine.url.render_as_string(hide_password=True)
    deadline = time.monotonic() + seconds
    while True:
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            return
        except DBAPIError as exc:
            reason = (str(exc.orig or exc).strip().splitlines() or [type(exc.orig or exc).__name__])[0]
            remaining = deadline - time.monotonic()
            if remaining <= 0:  # the last try was made at the deadline (0 s: the only one)
                raise DatabaseUnreachable(f"the database {where} is unreachable after {seconds:g} s: {reason}") \
                    from None
            pause = min(1.0, remaining)
            said(f"the database {where} is unreachable ({reason}); trying again in {round(pause, 1):g} s")
            time.sleep(pause)


class DatabaseUnreachable(Exception):
    """The database did not answer within the wait a process's start allows (wait_for_database)."""


def session_factory(config: Config | None = None) -> sessionmaker:
    url = (config or get_config()).database_url
    get_engine(config)
    return _factories[url]


@contextlib.contextmanager
def unit_of_work(config: Config | None = None):
    """One database transaction: commit on success, roll back on any exception."""
    session: Session = session_factory(config)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


@contextlib.contextmanager
def request_session(config: Config | None = None):
    """A session for one request that may commit several times (a payment commits before and
    after its channel call): it keeps one pooled connection throughout, so each commit does not
    check a connection out (and ping it) again. The caller commits; what is left is rolled back."""
    with get_engine(config).connect() as connection:
        session = Session(bind=connection, expire_on_commit=False)
        try:
            yield session
        finally:
            session.close()
            if connection.in_transaction():
                connection.rollback()


_read_only_engines: dict[Engine, Engine] = {}


def _read_only_engine(engine: Engine) -> Engine:
    readonly = _read_only_engines.get(engine)
    if readonly is None:
        options = {"payrouter_readonly": True}
        if engine.dialect.name == "postgresql":
            options["postgresql_readonly"] = True
        readonly = _read_only_engines[engine] = engine.execution_options(**options)
    return readonly


@contextlib.contextmanager
def read_only(config: Config | None = None):
    """A session that only reads: on SQLite it does not wait for (or block) writers, so it can
    be used while another transaction of the same thread is open; on PostgreSQL its transaction
    is ``BEGIN READ ONLY`` (a write in it fails; the same round trips as a plain BEGIN).

    It ends with COMMIT, not ROLLBACK: for a transaction that wrote nothing the two are the same
    to the database, but psycopg drops every statement the connection had prepared after a
    ROLLBACK (``DEALLOCATE ALL``), and the API-key lookup alone ran one every 50 ms per process:
    the pooled connections kept losing their prepared statements, so PostgreSQL parsed and planned
    each payment's statements afresh (docs/benchmarks.md, issue #18 item 5)."""
    session = Session(bind=_read_only_engine(get_engine(config)), expire_on_commit=False)
    try:
        yield session
        session.commit()
    finally:
        session.close()  # after an exception: rolled back (its transaction may have failed)


@contextlib.contextmanager
def pipelined(session: Session):
    """Send the block's statements without waiting for each answer (psycopg's pipeline mode: one
    round trip for what would take one each). For statements whose rowcount nobody reads: inside,
    rowcount is unknown (-1), while reading a statement's rows still waits for them. An error
    comes out when the block ends at the latest, as SQLAlchemy's own error (a lost connection
    invalidated as usual), and fails the transaction as it would have. Pending ORM changes are
    flushed first, the usual way. Elsewhere (SQLite) the block runs as it is. The block gets
    whether its statements are pipelined."""
    session.flush()
    connection = session.connection()
    driver = connection.connection.driver_connection
    if not hasattr(driver, "pipeline"):
        yield False
        return
    import psycopg

    try:
        with driver.pipeline():
            yield True  # leaving the pipeline syncs it: one round trip, and an error among the answers is
            # raised there, inside the try (a commit inside would cost one more: psycopg syncs at a COMMIT
            # it sends itself, and again when the pipeline ends; committed() sends its COMMIT with the block)
    except psycopg.Error as exc:
        disconnected = connection.dialect.is_disconnect(exc, driver, None)
        if disconnected:
            connection.invalidate(exc)
        raise DBAPIError.instance(None, None, exc, psycopg.Error, connection_invalidated=disconnected,
                                  dialect=connection.dialect) from exc


@contextlib.contextmanager
def committed(session: Session):
    """``pipelined``, then commit: on PostgreSQL the block's statements, the release of the open
    savepoints and the COMMIT go in the pipeline and take one round trip together (psycopg's own
    commit in a pipeline takes two: it syncs at the COMMIT, and again when the pipeline ends). The
    session's commit then finds the driver's transaction over and sends nothing; its hooks
    (``before_commit``, after-commit items) run as for any commit, the ``before_commit`` ones before
    the COMMIT is sent. An error (the COMMIT's included: a deferred constraint) comes out of the block
    as ``pipelined`` raises it, and nothing was committed. Elsewhere (SQLite): the block, then
    ``session.commit()``."""
    with pipelined(session) as together:
        yield
        if together:
            _run_before_commit(session)
            session.flush()
            while (savepoint := session.get_nested_transaction()) is not None:
                savepoint.commit()  # RELEASE SAVEPOINT, queued
            from psycopg.pq import TransactionStatus

            driver = session.connection().connection.driver_connection
            if driver.info.transaction_status != TransactionStatus.IDLE:  # (idle: nothing was begun)
                driver.execute("COMMIT")  # on the driver itself: none of SQLAlchemy's work per statement is needed
    if not together:
        session.commit()
        return
    # The hooks ran before the COMMIT: the session's commit, which sends nothing, must not run them
    # again (a statement of theirs would begin a transaction of its own, after the one committed).
    session.info[_HOOKS_RAN] = True
    try:
        session.commit()
    finally:
        session.info.pop(_HOOKS_RAN, None)


_BEFORE_COMMIT = "payrouter.before_commit"  # Session.info: what runs before each commit of the session
_HOOKS_RAN = "payrouter.before_commit_ran"  # Session.info: set while committed()'s COMMIT, already sent, is noted


def before_commit(session: Session, run: Callable[[Session], None]) -> Callable[[], None]:
    """Run ``run(session)`` before each commit of ``session`` (``committed`` included, whose COMMIT
    is sent with the statements before it); returns what stops it."""
    hooks = session.info.setdefault(_BEFORE_COMMIT, [])
    hooks.append(run)
    return lambda: hooks.remove(run)


@event.listens_for(Session, "before_commit")
def _before_commit(session: Session) -> None:
    """SQLAlchemy fires ``before_commit`` at a savepoint's release as well: that is no commit (a hook
    run there sends its statements inside the savepoint, or inside an enclosing one later rolled back,
    and an error of theirs comes out of the ``begin_nested`` block instead of the commit)."""
    if not session.in_nested_transaction():
        _run_before_commit(session)


def _run_before_commit(session: Session) -> None:
    if session.info.get(_HOOKS_RAN):
        return
    for run in list(session.info.get(_BEFORE_COMMIT, ())):
        run(session)
    for run, items in _batches(session.info.pop(_JUST_BEFORE_COMMIT, None) or ()).items():
        run(session, items)


_unique_inserts: dict[tuple[str, str], object] = {}


def _unique_insert(table, dialect: str):
    """``INSERT … ON CONFLICT DO NOTHING RETURNING <pk>`` for ``table``, built once: the values
    come as execution parameters, so SQLAlchemy reuses its compiled form."""
    key = (table.name, dialect)
    statement = _unique_inserts.get(key)
    if statement is None:
        insert = pg_insert if dialect == "postgresql" else sqlite_insert
        statement = _unique_inserts[key] = (insert(table).on_conflict_do_nothing()
                                            .returning(*table.primary_key.columns))
    return statement


_columns_of: dict[type, list[tuple[str, str, object]]] = {}


def _columns(cls) -> list[tuple[str, str, object]]:
    """(attribute, column name, column default) of a mapped class, read once."""
    columns = _columns_of.get(cls)
    if columns is None:
        columns = _columns_of[cls] = [(prop.key, prop.columns[0].name, prop.columns[0].default)
                                      for prop in cls.__mapper__.column_attrs]
    return columns


def add_unique(session: Session, obj) -> bool:
    """Insert ``obj``'s row unless it collides with a unique key (``INSERT … ON CONFLICT DO NOTHING``,
    on PostgreSQL and SQLite alike); True if it was inserted, and then ``obj`` belongs to the session
    with every column loaded (reading one later costs no query).

    One statement where a savepoint would take three; the caller turns False into its error."""
    loaded = instance_dict(obj)  # the instance's attribute values (a new object: no history to keep)
    values = {}
    for key, name, default in _columns(obj.__class__):
        value = loaded.get(key)
        if value is None and default is not None:
            value = default.arg(None) if default.is_callable else default.arg
        loaded[key] = value  # every column is loaded: nothing is left to expire below
        if value is not None:
            values[name] = value
    session.flush()  # rows this one refers to
    if not insert_unique_row(session, obj.__class__.__mapper__.local_table, values):
        return False
    make_transient_to_detached(obj)  # commits the loaded values as the row's
    session.add(obj)
    return True


def insert_unique_row(session: Session, table, values: dict) -> bool:
    """``INSERT … ON CONFLICT DO NOTHING`` of one row given by column name (Core: no object is
    built or tracked); True if it was inserted."""
    statement = _unique_insert(table, session.get_bind().dialect.name)
    return session.connection().execute(statement, values).first() is not None


def insert_unique_rows(session: Session, table, rows: list[dict], returning: tuple = ()) -> list:
    """``INSERT … ON CONFLICT DO NOTHING`` of many rows as one executemany (sent as multi-row
    inserts); a row that collides with a unique key is left out. ``returning``: columns of the
    rows inserted, returned (those left out are not)."""
    insert = (pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert)(table)
    if not returning:
        session.connection().execute(insert.on_conflict_do_nothing(), rows)
        return []
    return session.connection().execute(insert.on_conflict_do_nothing().returning(*returning), rows).all()


def serialize(session: Session, name: str) -> None:
    """Hold ``name``'s lock until the session's transaction ends: writers of the same name take
    turns (PostgreSQL: a transaction-level advisory lock on a 64-bit hash of the name; SQLite:
    every writing transaction already holds the database's write lock, BEGIN IMMEDIATE above)."""
    if session.get_bind().dialect.name == "postgresql":
        key = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def execute_all_matched(connection, statement, parameter_sets: list[dict]) -> bool:
    """Run a conditional UPDATE for every parameter set, as one executemany per set of keys (one
    round trip on PostgreSQL); True if each set matched a row. An executemany reports only how
    many rows matched in all, so False does not say which set missed: the caller rolls back."""
    groups: dict[tuple[str, ...], list[dict]] = {}
    for params in parameter_sets:
        groups.setdefault(tuple(params), []).append(params)
    return all(connection.execute(statement, group).rowcount == len(group) for group in groups.values())


_AFTER_COMMIT = "payrouter.after_commit"  # Session.info: (transaction, run, item) waiting for the commit
_JUST_BEFORE_COMMIT = "payrouter.just_before_commit"  # Session.info: (transaction, run, item) sent with it
_QUEUES = (_AFTER_COMMIT, _JUST_BEFORE_COMMIT)


def after_commit(session: Session, run: Callable[[list], None], item) -> None:
    """Hand ``item`` to ``run`` when (and only if) the transaction open now commits: an item added
    inside a savepoint that is rolled back, or in a transaction rolled back or closed uncommitted,
    is dropped. At the outermost commit ``run`` is called once with all its items of that
    transaction, in order (one Redis round trip a commit for a consumer that counts there).
    ``run`` is a module-level function (items are grouped by it); what it raises reaches the
    caller of ``commit()``, after the commit."""
    _queue(session, _AFTER_COMMIT, run, item)


def just_before_commit(session: Session, run: Callable[[Session, list], None], item) -> None:
    """Hand ``item`` to ``run(session, items)`` just before the transaction open now commits, after the
    ``before_commit`` hooks (inside ``committed``: in the COMMIT's round trip), its statements part of
    that transaction; dropped, grouped and ordered as ``after_commit``'s items are. What ``run`` raises,
    or a statement of its refused at the COMMIT, fails the commit: nothing is committed."""
    _queue(session, _JUST_BEFORE_COMMIT, run, item)


def _queue(session: Session, queue: str, run: Callable, item) -> None:
    current = session.get_nested_transaction() or session.get_transaction()
    if current is None:  # nothing begun yet: begin, so that a rollback from here drops the item
        session.connection()
        current = session.get_transaction()
    session.info.setdefault(queue, []).append((current, run, item))


def _batches(pending) -> dict[Callable, list]:
    """Queued items grouped by what they are handed to, each group in the order queued."""
    batches: dict[Callable, list] = {}
    for _transaction, run, item in pending:
        batches.setdefault(run, []).append(item)
    return batches


def _within(transaction, ancestor) -> bool:
    while transaction is not None:
        if transaction is ancestor:
            return True
        transaction = transaction.parent
    return False


@event.listens_for(Session, "after_commit")
def _run_committed(session: Session) -> None:
    # Fired for a savepoint's release too: run only when the outermost transaction commits.
    pending = session.info.get(_AFTER_COMMIT)
    if not pending or session.in_nested_transaction():
        return
    session.info[_AFTER_COMMIT] = []
    for run, items in _batches(pending).items():
        run(items)


@event.listens_for(Session, "after_soft_rollback")
def _drop_rolled_back(session: Session, previous_transaction) -> None:
    """A rolled-back (sub)transaction takes the items queued in it, and in those inside it, along."""
    for queue in _QUEUES:
        pending = session.info.get(queue)
        if pending:
            session.info[queue] = [p for p in pending if not _within(p[0], previous_transaction)]


@event.listens_for(Session, "after_transaction_end")
def _drop_uncommitted(session: Session, transaction) -> None:
    # The outermost transaction ended without a commit running them (closed, failed): nothing runs.
    if transaction.parent is None:
        for queue in _QUEUES:
            if session.info.get(queue):
                session.info[queue] = []


def dispose_all() -> None:
    """Drop pooled connections (after fork, or between test databases)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
        _factories.clear()
