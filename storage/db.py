"""Engine, sessions, the unit of work, and running the migrations."""

from __future__ import annotations

import fcntl
import logging
import os
import random
import select
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import wraps
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, Dialect, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement

log = logging.getLogger(__name__)
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# An execution option, read when a transaction begins: False lets its commit return before the
# disk has it (see unit_of_work).
DURABLE = "hotline_durable"
# An execution option, read when a transaction begins: True makes it a read-only transaction
# (see unit_of_work's read_only).
READ_ONLY = "hotline_read_only"
# Below Twilio's 15 s webhook timeout, so a request waiting for the lock still answers in time.
SQLITE_BUSY_TIMEOUT_MS = 5_000
# Pages in the write-ahead log before a commit copies them into the database (SQLite's default
# is 1,000, 4 MB). Every new call writes a few index pages at random places, and a page written
# again before the next checkpoint is copied once: checkpoints ten times rarer took 4% off each
# webhook while the single writer waits for them (bench/webhook_throughput.py). The log grows
# to about 40 MB and is reused, not shrunk; a crash replays it when the database next opens.
SQLITE_WAL_AUTOCHECKPOINT_PAGES = 10_000


class WriterQueueConnection(sqlite3.Connection):
    """A sqlite3 connection whose transactions first queue on a lock file beside the database.

    SQLite lets one writer in at a time; the others wait in its busy handler, which polls by
    sleeping 1, 2, 5, 10... ms. A webhook's transaction takes a fraction of a millisecond, so
    with two gunicorn workers most of a waiting request's time went to sleeping past the moment
    the lock came free (two workers answered no more webhooks than one). A blocking flock()
    wakes the next transaction the moment the last one ends. SQLite's own lock still decides:
    a writer that does not take this lock (the sqlite3 shell, the job queue's file) is waited
    for with busy_timeout as before. The kernel drops the lock when its holder dies.

    A read-only transaction (unit_of_work's read_only) does not queue: it begins deferred, with
    PRAGMA query_only on until it ends (_begin_sqlite).
    """

    writer_lock_path: str | None = None
    # The PRAGMA synchronous level set on this connection (see _make_sqlite_engine's _on_begin).
    synchronous_level: str | None = None
    # Whether PRAGMA query_only is on (a read-only transaction: see _begin_sqlite).
    query_only = False
    _writer_lock_fd: int | None = None
    _queued = False

    def queue_for_writing(self) -> None:
        """Wait until no other connection of this database's queue is in a transaction."""
        if self.writer_lock_path is None or self._queued:
            return
        if self._writer_lock_fd is None:
            self._writer_lock_fd = os.open(
                self.writer_lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._writer_lock_fd, fcntl.LOCK_EX)
        self._queued = True

    def leave_queue(self) -> None:
        """Let the next transaction in."""
        if self._queued and self._writer_lock_fd is not None:
            fcntl.flock(self._writer_lock_fd, fcntl.LOCK_UN)
        self._queued = False

    def set_query_only(self, on: bool) -> None:
        """Turn PRAGMA query_only on or off (no statement when it is so already)."""
        if self.query_only != on:
            self.execute(f"PRAGMA query_only = {'ON' if on else 'OFF'}")
            self.query_only = on

    def _end_read_only(self) -> None:
        # After a read-only transaction the connection writes again. Should this fail, the
        # flag stays on and the next transaction's begin turns it off (_begin_sqlite).
        if self.query_only:
            try:
                self.set_query_only(False)
            except sqlite3.Error:
                log.warning("could not turn PRAGMA query_only off after a read-only "
                            "transaction; the next transaction will")

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self.leave_queue()
            self._end_read_only()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self.leave_queue()
            self._end_read_only()

    def close(self) -> None:
        try:
            super().close()
        finally:
            fd, self._writer_lock_fd, self._queued = self._writer_lock_fd, None, False
            if fd is not None:
                os.close(fd)  # and with it the lock, if held


class _NoResultRows(logging.Filter):
    """Drop the engine's DEBUG echo of result rows: they carry phone numbers and questions.

    hide_parameters keeps statement parameters out of logs and errors; with the
    sqlalchemy.engine logger at DEBUG the engine also logs every row it reads, which
    hide_parameters does not cover.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != "Row %r"


logging.getLogger("sqlalchemy.engine.Engine").addFilter(_NoResultRows())


def make_engine(url: str) -> Engine:
    """Create an engine for the URL, with the settings each backend needs."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _make_sqlite_engine(parsed)
    if parsed.get_backend_name() == "postgresql":
        engine = create_engine(parsed, pool_pre_ping=True, hide_parameters=True,
                               connect_args=postgres_connect_args(parsed))

        @event.listens_for(engine, "begin")
        def _on_begin(connection: Any) -> None:
            options = connection.get_execution_options()
            _begin_postgresql(connection.connection.dbapi_connection,
                              durable=options.get(DURABLE, True),
                              read_only=options.get(READ_ONLY, False))

        return engine
    return create_engine(parsed, hide_parameters=True)


# libpq's settings for a server that vanishes without closing its connections (a power cut
# or a network split, with PostgreSQL on another machine): without them a webhook waits for
# an answer until TCP gives up (about 15 minutes for data sent, 2 for a connection attempt),
# long past Twilio's 15 s, and the caller hears Twilio's own error. With them a statement the
# server does not acknowledge fails within 5 s, a connection attempt within 5 s, and an idle
# pooled connection is found dead within a minute: the caller hears the hotline's apology.
# A URL's own query (?connect_timeout=10) wins; over a Unix socket libpq ignores the TCP ones.
POSTGRES_CONNECT_DEFAULTS: Mapping[str, str] = {
    "connect_timeout": "5",
    "tcp_user_timeout": "5000",  # milliseconds
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
}


def postgres_connect_args(url: URL, **extra: str) -> dict[str, str]:
    """Return the connect arguments of a PostgreSQL engine: POSTGRES_CONNECT_DEFAULTS where
    the URL's query does not set them, then extra."""
    args = {k: v for k, v in POSTGRES_CONNECT_DEFAULTS.items() if k not in url.query}
    args.update(extra)
    return args


def _make_sqlite_engine(url: URL) -> Engine:
    database = url.database or ""
    in_memory = database in ("", ":memory:") or url.query.get("mode") == "memory"
    if not in_memory and not database.startswith("file:"):
        # It will hold residents' numbers and questions: a folder made here is private.
        Path(database).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # hide_parameters: phone numbers and questions never reach the logs with an SQL error.
    engine = create_engine(url, hide_parameters=True,
                           connect_args={"factory": WriterQueueConnection})
    writer_lock = None if in_memory or database.startswith("file:") else f"{database}-writers"

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Hand transaction control to SQLAlchemy (see _on_begin): the sqlite3 module's own
        # implicit BEGIN skips SELECT and SAVEPOINT, which breaks begin_nested().
        dbapi_connection.isolation_level = None
        dbapi_connection.writer_lock_path = writer_lock
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys = ON")
            if not in_memory:
                cursor.execute("PRAGMA journal_mode = WAL")
                cursor.execute(f"PRAGMA wal_autocheckpoint = {SQLITE_WAL_AUTOCHECKPOINT_PAGES}")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        options = connection.get_execution_options()
        _begin_sqlite(connection.connection.dbapi_connection,
                      durable=options.get(DURABLE, True),
                      read_only=options.get(READ_ONLY, False))

    return engine


def _begin_sqlite(dbapi_connection: Any, *, durable: bool, read_only: bool = False) -> None:
    """Begin a transaction on a WriterQueueConnection (see unit_of_work for durable and
    read_only)."""
    if read_only:
        # A deferred transaction outside the writer queue: in WAL mode it reads a snapshot
        # while writers come and go, and takes no lock a writer waits for. query_only makes
        # a write in it fail ("attempt to write a readonly database") instead of waiting for
        # the write lock, or failing only when another writer happens to be in.
        dbapi_connection.set_query_only(True)
        dbapi_connection.execute("BEGIN DEFERRED")
        return
    # A read-only transaction whose end could not turn query_only off (_end_read_only).
    dbapi_connection.set_query_only(False)
    # FULL: the commit syncs the write-ahead log to disk; NORMAL: it does not, and a power
    # cut may lose it (never the database). SQLite refuses the change inside a transaction.
    level = "FULL" if durable else "NORMAL"
    # On the driver's connection: these two statements run on every transaction, and
    # through SQLAlchemy they cost more than a webhook's own statements.
    if dbapi_connection.synchronous_level != level:
        dbapi_connection.execute(f"PRAGMA synchronous = {level}")
        dbapi_connection.synchronous_level = level
    # IMMEDIATE takes the write lock up front and waits for it (busy_timeout). A deferred
    # transaction that reads and then writes gets "database is locked" at once, without
    # waiting, whenever another writer committed in between.
    dbapi_connection.queue_for_writing()
    try:
        dbapi_connection.execute("BEGIN IMMEDIATE")
    except BaseException:
        dbapi_connection.leave_queue()
        raise


def _begin_postgresql(dbapi_connection: Any, *, durable: bool, read_only: bool = False) -> None:
    """Begin a transaction on a psycopg connection (it begins at its first statement)."""
    if read_only:
        # Before any other statement of the transaction; a write in it then fails with
        # "cannot execute ... in a read-only transaction". Nothing to make durable.
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION READ ONLY")
        return
    if not durable:
        # Only this transaction's commit: its WAL record is flushed a moment later.
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO OFF")


def _begin_other(dbapi_connection: Any, *, durable: bool, read_only: bool = False) -> None:
    """Other databases begin at their first statement, and have no durability or read-only
    setting here."""


_BEGIN: dict[str, Callable[..., None]] = {  # by dialect
    "sqlite": _begin_sqlite, "postgresql": _begin_postgresql}


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Create the session factory that requests and jobs take their sessions from."""
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def unit_of_work(factory: sessionmaker[Session], *, durable: bool = True,
                 read_only: bool = False) -> Iterator[Session]:
    """Yield a session, commit it on success, roll it back on error, and always close it.

    durable=False is for what may be lost in a power cut or a crash of the database server (not
    in a crash of the application's process): the call and key-press records of the voice
    menus. Its commit returns without waiting for the disk: SQLite's synchronous=NORMAL in WAL
    mode, PostgreSQL's synchronous_commit=off, for that transaction only. The database stays
    consistent, and the next durable commit (a question) makes everything before it durable
    too, as both logs are written in order.

    read_only=True is for work that only reads (reports, the public figures, the queue's
    pages, a retention dry run), however long it takes. On SQLite it neither queues for the
    writer lock file nor runs BEGIN IMMEDIATE: a deferred transaction reads a snapshot of the
    database (WAL) while the webhooks' writes go on beside it. Anything that writes in it
    (a flush, an UPDATE, a statement through the session's connection) raises: SQLite's
    PRAGMA query_only is on for that transaction (and off again after it), PostgreSQL's
    transaction is SET TRANSACTION READ ONLY. Its end is a commit all the same, so that
    objects loaded in it stay loaded (expire_on_commit is off), and a change left pending in
    the session fails there too.
    """
    session = factory()
    try:
        if read_only:
            session.connection(execution_options={READ_ONLY: True})
        elif not durable:
            session.connection(execution_options={DURABLE: False})
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


# SQLSTATEs of a transaction the database aborted because of another one, not because of
# anything in it: PostgreSQL's deadlock_detected and serialization_failure. The same
# transaction run again normally succeeds.
CONFLICT_SQLSTATES = frozenset({"40P01", "40001"})
# Runs of a function that retry_conflicts allows: the first and two more.
CONFLICT_TRIES = 3
# Seconds between them, drawn at random so that two victims do not meet again in step.
CONFLICT_PAUSE = (0.02, 0.1)
_P = ParamSpec("_P")
_T = TypeVar("_T")


def is_conflict(error: BaseException) -> bool:
    """Whether error is the database aborting the transaction for another one's sake (a
    deadlock, a serialization failure), so that running it again is the cure."""
    if not isinstance(error, DBAPIError):
        return False
    return getattr(error.orig, "sqlstate", None) in CONFLICT_SQLSTATES


def retry_conflicts(work: Callable[_P, _T]) -> Callable[_P, _T]:
    """Run work again, up to CONFLICT_TRIES runs in all, when the database aborts one of its
    transactions for another's sake (is_conflict); then raise the last conflict.

    For work whose transactions are all its own (unit_of_work inside it) and whose effects
    outside the database come after its last commit: an aborted transaction wrote nothing, so
    a second run starts from where the first did. The lock order of storage.claims and
    storage.callbacks (a resident's row, then callback attempts, then questions) keeps the
    forms and Twilio's callbacks from deadlocking with each other; this covers what the order
    does not (a sweep, an administrator's statement), which would otherwise be an error page
    for a consultant or a status lost from Twilio.
    """

    @wraps(work)
    def run(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        for attempt in range(1, CONFLICT_TRIES + 1):
            try:
                return work(*args, **kwargs)
            except DBAPIError as error:
                if not is_conflict(error) or attempt == CONFLICT_TRIES:
                    raise
                log.warning("%s: the database aborted a transaction (%s); running it again "
                            "(%d of %d)", getattr(work, "__name__", "work"),
                            getattr(error.orig, "sqlstate", "?"), attempt + 1, CONFLICT_TRIES)
                time.sleep(random.uniform(*CONFLICT_PAUSE))  # a pause, not a secret
        raise AssertionError("unreachable")

    return run


@contextmanager
def transaction(engine: Engine, *, durable: bool = True) -> Iterator[Connection]:
    """Yield a connection in a transaction: committed on success, rolled back on error.

    For the voice menus' few statements on tables (storage.calls), which need no ORM objects:
    a Session costs more than those statements (bench/webhook_throughput.py). durable as in
    unit_of_work.
    """
    with engine.connect() as connection:
        if not durable:
            connection.execution_options(**{DURABLE: False})
        with connection.begin():
            yield connection


def make_webhook_engine(url: str, engine: Engine) -> Engine:
    """Return the engine of the voice webhooks' writes, which need not be durable.

    SQLite: engine itself. PostgreSQL: a second engine whose connections are made with
    synchronous_commit off (a commit does not wait for the disk, as in unit_of_work, without
    a SET LOCAL in each transaction) and in autocommit mode: run_alone sends a webhook's one
    statement as its own transaction, one round trip, and driver_transaction sends BEGIN and
    COMMIT itself. A connection the server closed while it sat in the pool (a restart) is
    found without a round trip before it is used (_dropped) and replaced; the main engine
    instead pings each connection as it lends it out. A webhook was six round trips (the ping
    and its BEGIN, SET LOCAL, two statements, COMMIT) and is one (bench/webhook_throughput.py).
    Only run_alone and driver_transaction run on it: an SQLAlchemy transaction is refused.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        return engine
    # After the URL's own ?options= (connect_args would replace them).
    given = parsed.query.get("options") or ()
    options = " ".join([*([given] if isinstance(given, str) else given), _NO_WAIT_OPTION])
    webhooks = create_engine(
        parsed, hide_parameters=True, isolation_level="AUTOCOMMIT",
        connect_args=postgres_connect_args(parsed, options=options),
        execution_options={DURABLE: False, _EXPLICIT_TRANSACTIONS: True})

    @event.listens_for(webhooks, "begin")
    def _refuse(connection: Any) -> None:
        raise RuntimeError("the webhook engine runs storage.db.driver_transaction only")

    return webhooks


# How make_webhook_engine's connections start, and the engine option that marks them.
_NO_WAIT_OPTION = "-c synchronous_commit=off"
_EXPLICIT_TRANSACTIONS = "hotline_explicit_transactions"


@dataclass(frozen=True)
class DriverTransaction:
    """A transaction on one of the engine's pooled driver connections (driver_transaction)."""

    dialect: Dialect
    dbapi_connection: Any


@contextmanager
def driver_transaction(engine: Engine, *, durable: bool = True) -> Iterator[DriverTransaction]:
    """Yield a transaction on a pooled driver connection, for DriverStatements only.

    The voice webhooks' transactions (storage.calls): as transaction() does, it begins the way
    the engine's own transactions begin (SQLite: the writer queue, BEGIN IMMEDIATE; durable as
    in unit_of_work), commits on success, rolls back on error, and hands the connection back to
    the pool (which checks a PostgreSQL connection before lending it out again, and resets
    it). What it skips is SQLAlchemy's Connection around the driver's (its transaction object,
    events, the connection's own checks): 40 µs of the 380 a webhook took in the application
    (bench/webhook_throughput.py). Driver errors arrive as the driver raises them. On the
    PostgreSQL engine of make_webhook_engine it sends BEGIN and COMMIT itself.
    """
    if engine.get_execution_options().get(_EXPLICIT_TRANSACTIONS):
        with _explicit_transaction(engine, durable=durable) as explicit:
            yield explicit
        return
    pooled = engine.raw_connection()
    try:
        dbapi_connection: Any = pooled.dbapi_connection
        begin: Callable[..., None] = _BEGIN.get(engine.dialect.name, _begin_other)
        begin(dbapi_connection, durable=durable)
        try:
            yield DriverTransaction(engine.dialect, dbapi_connection)
        except BaseException:
            try:
                dbapi_connection.rollback()
            except Exception:
                # A connection that cannot roll back (the server went away) is not lent out
                # again, and the error that got here is the one that is raised.
                pooled.invalidate()
            raise
        dbapi_connection.commit()
    finally:
        pooled.close()


def _run(dbapi_connection: Any, sql: str) -> None:
    with dbapi_connection.cursor() as cursor:
        cursor.execute(sql)


def _dropped(dbapi_connection: Any) -> bool:
    """Whether the server closed this idle connection, found without a round trip.

    An idle connection has nothing to read; one the server closed (a restart, an
    administrator's pg_terminate_backend) has its goodbye message and the end of the stream.
    Unexpected data also counts: the connection is then replaced, which costs a reconnect.
    """
    try:
        poller = select.poll()  # not select.select: it refuses descriptors past 1023
        poller.register(dbapi_connection.fileno(), select.POLLIN)
        return bool(poller.poll(0))
    except Exception:  # psycopg raises its own error once libpq has let the socket go
        return True


# Connections _live_connection tries before it takes what the pool gives (after a restart
# every pooled connection is closed, and each one invalidated reconnects on its next turn).
_MAX_DROPPED = 8


def _live_connection(engine: Engine) -> Any:
    """Borrow a connection of make_webhook_engine's pool that the server has not closed."""
    pooled = engine.raw_connection()
    for _ in range(_MAX_DROPPED):
        if not _dropped(pooled.dbapi_connection):
            break
        log.info("a pooled connection was closed by the server; reconnecting")
        pooled.invalidate()
        pooled.close()
        pooled = engine.raw_connection()
    return pooled


def runs_alone(engine: Engine) -> bool:
    """Whether run_alone takes one round trip on this engine (make_webhook_engine's PostgreSQL
    engine), rather than a driver_transaction around the statement."""
    return bool(engine.get_execution_options().get(_EXPLICIT_TRANSACTIONS))


def run_alone(engine: Engine, statement: DriverStatement, params: Mapping[str, Any], *,
              durable: bool) -> list[Any]:
    """Run one statement as a transaction of its own; return the rows it returns.

    On make_webhook_engine's PostgreSQL engine, with durable=False: the statement alone, in
    autocommit mode, one round trip (no BEGIN, no COMMIT); a connection the server closed
    is replaced before it is used (_dropped). Otherwise in a driver_transaction.
    """
    if durable or not runs_alone(engine):
        with driver_transaction(engine, durable=durable) as connection:
            return statement.execute(connection, params)
    pooled = _live_connection(engine)
    try:
        return statement.execute(DriverTransaction(engine.dialect, pooled.dbapi_connection),
                                 params)
    except engine.dialect.loaded_dbapi.Error as error:
        if engine.dialect.is_disconnect(error, pooled.dbapi_connection, None):
            pooled.invalidate()  # not lent out again
        raise
    finally:
        pooled.close()


@contextmanager
def _explicit_transaction(engine: Engine, *, durable: bool) -> Iterator[DriverTransaction]:
    """driver_transaction on an engine of autocommit connections (make_webhook_engine)."""
    if durable:
        # SET LOCAL synchronous_commit TO on would override a server's remote_apply: durable
        # writes go through the main engine, whose connections keep the server's setting.
        raise ValueError("the webhook engine is for writes that need not be durable")
    pooled = _live_connection(engine)
    try:
        dbapi_connection: Any = pooled.dbapi_connection
        _run(dbapi_connection, "BEGIN")
        try:
            yield DriverTransaction(engine.dialect, dbapi_connection)
        except BaseException:
            try:
                _run(dbapi_connection, "ROLLBACK")
            except Exception:
                pooled.invalidate()  # as in driver_transaction
            raise
        _run(dbapi_connection, "COMMIT")
    finally:
        pooled.close()


@dataclass(frozen=True)
class _ForDriver:
    sql: str
    compiled: SQLCompiler
    # Bound parameter names in the order of the driver's placeholders (None: named placeholders).
    positions: Sequence[str] | None
    processors: Mapping[str, Callable[[Any], Any]]


class DriverStatement:
    """A statement compiled once per dialect by SQLAlchemy and run on the driver's cursor.

    For the few statements of every voice webhook (storage/calls.py): SQLAlchemy's execution
    around one statement (execution context, parameter and result objects, events) cost about
    40 µs, twice what SQLite needs to run it, and a webhook runs two
    (bench/webhook_throughput.py). What reaches the driver is still SQLAlchemy's: the SQL and
    placeholder order from its compiler, every parameter converted by its column type's bind
    processor (UTC timestamps, JSON). What is skipped: statement logging, the wrapping of driver
    errors in SQLAlchemy's exception classes, result processing (rows come back as the
    driver's tuples: return only plain integer and text columns), and column defaults computed
    in Python (a statement that would need one is refused: give the value).
    """

    def __init__(self, statement: ClauseElement) -> None:
        self.statement = statement
        self._compiled: dict[str, _ForDriver] = {}

    def _for(self, dialect: Dialect) -> _ForDriver:
        known = self._compiled.get(dialect.name)
        if known is None:
            compiled = self.statement.compile(dialect=dialect)
            assert isinstance(compiled, SQLCompiler)
            if compiled.insert_prefetch or compiled.update_prefetch:
                # SQLAlchemy computes those in Python as it executes; here they would be NULL.
                names = [c.name for c in [*compiled.insert_prefetch, *compiled.update_prefetch]]
                raise ValueError(f"give these columns a value, their defaults are Python's: "
                                 f"{', '.join(names)}")
            processors = {}
            for bind, name in compiled.bind_names.items():
                processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
                if processor is not None:
                    processors[name] = processor
            known = _ForDriver(compiled.string, compiled, compiled.positiontup, processors)
            self._compiled[dialect.name] = known
        return known

    def execute(self, connection: Connection | DriverTransaction,
                params: Mapping[str, Any]) -> list[Any]:
        """Run the statement in the connection's transaction; return the rows it returns."""
        if isinstance(connection, DriverTransaction):
            dbapi_connection = connection.dbapi_connection
        elif connection.in_transaction():
            dbapi_connection = connection.connection.dbapi_connection
        else:
            raise RuntimeError("DriverStatement runs inside a transaction (connection.begin())")
        compiled = self._for(connection.dialect)
        values = compiled.compiled.construct_params(dict(params))
        for name, processor in compiled.processors.items():
            values[name] = processor(values[name])
        arguments: Sequence[Any] | Mapping[str, Any] = (
            values if compiled.positions is None else [values[n] for n in compiled.positions])
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(compiled.sql, arguments)
            return list(cursor.fetchall()) if cursor.description else []
        finally:
            cursor.close()


def alembic_config(url: str) -> Config:
    """Build the Alembic configuration for the URL, independent of the working directory."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolation would read "%" (URL-encoded passwords) as a reference.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at the URL to the revision (the newest by default)."""
    command.upgrade(alembic_config(url), revision)


def current_revision(url: str) -> str | None:
    """Return the database's migration revision, or None when it has none."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return revision_of(connection)
    finally:
        engine.dispose()


def revision_of(connection: Connection) -> str | None:
    """The migration revision of the database on this connection (None: never migrated)."""
    revision: str | None = MigrationContext.configure(connection).get_current_revision()
    return revision
