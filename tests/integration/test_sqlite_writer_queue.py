"""SQLite's writers queue on a lock file (storage.db.WriterQueueConnection).

The queue is what lets two gunicorn workers on the SQLite default answer more webhooks than
one (bench/webhook_throughput.py): a transaction waiting for another is woken when it ends,
instead of sleeping in SQLite's busy handler. These tests check the lock is held exactly while
a transaction is open, is let go on every way out, and never outlives its holder.
"""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import signal
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
from sqlalchemy import Engine, select, text

from storage import db
from storage.calls import answer_call, answer_incoming_call
from storage.db import (
    driver_transaction,
    make_engine,
    make_session_factory,
    make_webhook_engine,
    transaction,
    unit_of_work,
    upgrade,
)
from storage.models import Call

NOW = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
HOTLINE = "+77000000000"


@pytest.fixture
def database(tmp_path: Path) -> Path:
    path = tmp_path / "hotline.sqlite3"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def engine(database: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{database}")
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture(params=[transaction, driver_transaction], ids=["connection", "driver"])
def begin(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """Both ways to begin: SQLAlchemy's connection (transaction), the driver's (the webhooks)."""
    return cast(Callable[..., Any], request.param)


def queue_is_free(database: Path) -> bool:
    """Whether another connection could join the queue now (tried without waiting)."""
    fd = os.open(f"{database}-writers", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # and with it the lock, if it was taken
    return True


def test_a_transaction_holds_the_queue_until_it_commits(
        engine: Engine, database: Path, begin: Callable[..., Any]) -> None:
    with begin(engine, durable=False) as connection:
        assert not queue_is_free(database)
        answer_call(connection, call_sid="CA1", from_number="87011234567", to_number=HOTLINE,
                    now=NOW)
    assert queue_is_free(database)
    sessions = make_session_factory(engine)
    with unit_of_work(sessions) as session:
        assert queue_is_free(database)  # a session begins at its first statement
        assert session.scalars(select(Call.call_sid)).all() == ["CA1"]
        assert not queue_is_free(database)
    assert queue_is_free(database)


def test_a_failed_transaction_lets_the_queue_go(
        engine: Engine, database: Path, begin: Callable[..., Any]) -> None:
    with pytest.raises(RuntimeError), begin(engine) as connection:
        answer_call(connection, call_sid="CA1", from_number="87011234567", to_number=HOTLINE,
                    now=NOW)
        raise RuntimeError("the request failed")
    assert queue_is_free(database)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM calls")).scalar_one() == 0


def test_a_begin_that_times_out_lets_the_queue_go(
        database: Path, monkeypatch: pytest.MonkeyPatch, begin: Callable[..., Any]) -> None:
    """A writer outside the queue (here the sqlite3 module itself) is waited for as before."""
    monkeypatch.setattr(db, "SQLITE_BUSY_TIMEOUT_MS", 50)
    engine = make_engine(f"sqlite:///{database}")
    outsider = sqlite3.connect(database, isolation_level=None)
    try:
        outsider.execute("BEGIN IMMEDIATE")
        with pytest.raises(Exception, match="database is locked"), begin(engine):
            pass
        assert queue_is_free(database)
        outsider.execute("ROLLBACK")
        with begin(engine) as connection:
            answer_call(connection, call_sid="CA1", from_number="87011234567",
                        to_number=HOTLINE, now=NOW)
    finally:
        outsider.close()
        engine.dispose()


def test_a_second_transaction_waits_in_the_queue_and_then_goes_in(
        database: Path, monkeypatch: pytest.MonkeyPatch, begin: Callable[..., Any]) -> None:
    """It waits longer than SQLite's busy timeout would: it waits in the queue, not in SQLite."""
    monkeypatch.setattr(db, "SQLITE_BUSY_TIMEOUT_MS", 50)
    engine = make_engine(f"sqlite:///{database}")
    order: list[str] = []
    first_in, second_started = threading.Event(), threading.Event()
    release_first = threading.Event()

    def first() -> None:
        with begin(engine) as connection:
            answer_call(connection, call_sid="CA1", from_number="87011234567",
                        to_number=HOTLINE, now=NOW)
            first_in.set()
            assert release_first.wait(30)
            order.append("first commits")

    def second() -> None:
        assert first_in.wait(30)
        second_started.set()
        with begin(engine) as connection:
            order.append("second in")
            answer_call(connection, call_sid="CA2", from_number="87011234568",
                        to_number=HOTLINE, now=NOW)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    try:
        assert second_started.wait(30)
        # Four busy timeouts: in SQLite's busy handler the second would have failed by now.
        threads[1].join(0.2)
        assert threads[1].is_alive() and order == []
    finally:
        release_first.set()
        for thread in threads:
            thread.join(30)
    try:
        assert order == ["first commits", "second in"]
        with engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM calls")).scalar_one() == 2
        assert queue_is_free(database)
    finally:
        engine.dispose()


def test_a_webhook_write_goes_in_while_a_read_only_unit_reads(
        engine: Engine, database: Path) -> None:
    """Read-only work (a report, the public figures) neither queues for the writer lock nor
    holds SQLite's write lock: an incoming call's write goes in and commits while the reader
    is still inside its transaction, which goes on reading its own snapshot."""
    sessions = make_session_factory(engine)
    webhooks = make_webhook_engine(f"sqlite:///{database}", engine)
    order: list[str] = []
    seen: list[list[str]] = []
    reader_in, written = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            with unit_of_work(sessions, read_only=True) as session:
                seen.append(list(session.scalars(select(Call.call_sid))))
                order.append("reader in")
                reader_in.set()
                # Without the read-only path the write waits for this transaction to end: the
                # reader then gives up waiting after 10 s and the order below is wrong.
                written.wait(10)
                seen.append(list(session.scalars(select(Call.call_sid))))
                order.append("reader ends")
        except BaseException as error:  # reported by the main thread
            errors.append(error)
            reader_in.set()

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        assert reader_in.wait(30)
        assert queue_is_free(database)  # the reader is not in the writers' queue
        answer_incoming_call(webhooks, call_sid="CA1", phone="+77011234567",
                             from_number="87011234567", to_number=HOTLINE, now=NOW)
        order.append("write committed")
        written.set()
    finally:
        written.set()
        thread.join(30)
    assert not errors, errors
    assert order == ["reader in", "write committed", "reader ends"]
    assert seen == [[], []]  # the reader's snapshot, from before the write
    with unit_of_work(sessions, read_only=True) as session:
        assert session.scalars(select(Call.call_sid)).all() == ["CA1"]
    assert queue_is_free(database)


def test_a_read_only_unit_ends_with_its_connection_writable(engine: Engine,
                                                            database: Path) -> None:
    sessions = make_session_factory(engine)
    with unit_of_work(sessions, read_only=True) as session:
        raw = session.connection().connection.dbapi_connection
        assert isinstance(raw, db.WriterQueueConnection)
        assert raw.execute("PRAGMA query_only").fetchone() == (1,)
        assert queue_is_free(database)
    assert raw.execute("PRAGMA query_only").fetchone() == (0,)
    with transaction(engine) as connection:  # the same pooled connection, writing
        assert connection.connection.dbapi_connection is raw
        answer_call(connection, call_sid="CA1", from_number="87011234567", to_number=HOTLINE,
                    now=NOW)


def _hold_a_transaction(path: str, ready: multiprocessing.synchronize.Event) -> None:
    engine = make_engine(f"sqlite:///{path}")
    with transaction(engine) as connection:
        answer_call(connection, call_sid="CA9", from_number="87011234569", to_number=HOTLINE,
                    now=NOW)
        ready.set()
        signal.pause()  # until killed


@contextmanager
def _killed_holder(database: Path) -> Iterator[None]:
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    holder = context.Process(target=_hold_a_transaction, args=(str(database), ready))
    holder.start()
    try:
        assert ready.wait(60), "the holder never began its transaction"
        assert not queue_is_free(database)
        os.kill(holder.pid or 0, signal.SIGKILL)
        holder.join(30)
        yield
    finally:
        if holder.is_alive():
            holder.kill()
            holder.join()


def test_a_holder_killed_mid_transaction_frees_the_queue_and_loses_only_its_own_work(
        engine: Engine, database: Path, begin: Callable[..., Any]) -> None:
    with _killed_holder(database):
        assert queue_is_free(database)
        with begin(engine) as connection:
            answer_call(connection, call_sid="CA1", from_number="87011234567",
                        to_number=HOTLINE, now=NOW)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT call_sid FROM calls")).scalars().all() == ["CA1"]


def test_an_in_memory_database_has_no_queue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            ) -> None:
    monkeypatch.chdir(tmp_path)
    engine = make_engine("sqlite://")
    try:
        with engine.connect() as connection:
            raw = connection.connection.dbapi_connection
            assert isinstance(raw, db.WriterQueueConnection)
            assert raw.writer_lock_path is None
            with connection.begin():
                connection.execute(text("SELECT 1"))
    finally:
        engine.dispose()
    assert list(tmp_path.iterdir()) == []
