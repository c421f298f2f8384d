"""The storage package against real databases: SQLite and PostgreSQL."""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, Insert, bindparam, event, func, insert, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import ORMExecuteState, Session, sessionmaker

from storage import questions as questions_module
from storage.calls import (
    answer_call,
    get_call,
    record_keys,
    remember_language,
    start_call,
    touch_caller,
    update_call_status,
)
from storage.db import (
    SQLITE_BUSY_TIMEOUT_MS,
    SQLITE_WAL_AUTOCHECKPOINT_PAGES,
    DriverStatement,
    DriverTransaction,
    current_revision,
    driver_transaction,
    is_conflict,
    make_engine,
    make_session_factory,
    make_webhook_engine,
    retry_conflicts,
    transaction,
    unit_of_work,
    upgrade,
)
from storage.models import (
    DOWNLOAD_FAILED,
    DOWNLOAD_PENDING,
    DOWNLOAD_REFUSED,
    DOWNLOAD_STORED,
    QUESTION_CLOSED,
    Base,
    Call,
    Caller,
    Question,
    Recording,
)
from storage.questions import (
    count_download_attempt,
    get_recording,
    mark_recording_failed,
    mark_recording_stored,
    record_question,
    recordings_to_fetch,
    waiting_questions,
)
from storage.utc import UTCDateTime
from tests.support import in_two_threads, terminate_backend

NOW = datetime(2025, 3, 14, 9, 30, tzinfo=UTC)
ALMATY = timezone(timedelta(hours=5))
HOTLINE = "+77000000000"


def _count(session: Session, model: type[Base]) -> int:
    return session.scalar(select(func.count()).select_from(model)) or 0


def _record(session: Session, sid: str = "RE1", call_sid: str = "CA1", **changes: Any) -> Any:
    arguments: dict[str, Any] = {
        "recording_sid": sid,
        "call_sid": call_sid,
        "recording_url": f"https://api.twilio.com/Recordings/{sid}",
        "duration": 12,
        "language": "kk",
        "topic": "pensions",
        "now": NOW,
    }
    arguments.update(changes)
    return record_question(session, **arguments)


class _Meet:
    """Hold each session at its first statement that `matches` until both are there: a race.

    On SQLite writers take the lock at BEGIN, so two cannot both be inside a transaction; they
    meet before starting instead, and the database serialises them.
    """

    def __init__(self) -> None:
        self.met: list[bool] = []

    def matches(self, state: ORMExecuteState) -> bool:
        """Tell whether this is the statement to meet at."""
        raise NotImplementedError

    def __call__(self, session: Session, barrier: threading.Barrier) -> None:
        """Prepare one thread's session."""
        if session.get_bind().dialect.name == "sqlite":
            barrier.wait()
            return
        seen = False

        @event.listens_for(session, "do_orm_execute")
        def meet(state: ORMExecuteState) -> Any:
            nonlocal seen
            if seen or not self.matches(state):
                return None
            seen = True
            # A lookup runs first and meets after; an INSERT meets before it is sent.
            result = state.invoke_statement() if state.is_select else None
            barrier.wait()
            self.met.append(True)
            return result

    def check(self, factory: sessionmaker[Session]) -> None:
        """Assert that on PostgreSQL both sessions really met at that statement."""
        if factory.kw["bind"].dialect.name != "sqlite":
            assert len(self.met) == 2


class MeetAfterFirstLookup(_Meet):
    """Both sessions SELECT model before either inserts."""

    def __init__(self, model: type[Base]) -> None:
        super().__init__()
        self.model = model

    def matches(self, state: ORMExecuteState) -> bool:
        """The first SELECT of the model."""
        return state.is_select and any(
            mapper.class_ is self.model for mapper in state.all_mappers)


class MeetBeforeFirstInsert(_Meet):
    """Both sessions send their INSERT into table at the same moment.

    Callers and calls are upserts (INSERT ... ON CONFLICT): the unique constraint makes one
    wait for the other's commit. They run on the driver's cursor (storage.db.DriverStatement),
    past the session's events: the two meet in DriverStatement.execute.
    """

    def __init__(self, table: str, monkeypatch: pytest.MonkeyPatch) -> None:
        super().__init__()
        self.table = table
        self.barriers: dict[int, threading.Barrier] = {}  # by id of the session's connection
        run = DriverStatement.execute

        def execute(statement: DriverStatement, connection: Connection,
                    params: Mapping[str, Any]) -> list[Any]:
            barrier = self.barriers.get(id(connection))
            table = getattr(statement.statement, "table", None)
            is_insert = isinstance(statement.statement, Insert)
            if barrier is not None and is_insert and getattr(table, "name", None) == self.table:
                del self.barriers[id(connection)]
                barrier.wait()
                self.met.append(True)
            return run(statement, connection, params)

        monkeypatch.setattr(DriverStatement, "execute", execute)

    def __call__(self, session: Session, barrier: threading.Barrier) -> None:
        """Prepare one thread's session: on PostgreSQL, meet at its first INSERT into table."""
        if session.get_bind().dialect.name == "sqlite":
            barrier.wait()
            return
        self.barriers[id(session.connection())] = barrier


# --- schema -----------------------------------------------------------------------------------


def test_migration_matches_models(migrated_url: str) -> None:
    engine = make_engine(migrated_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()
    assert current_revision(migrated_url) == head_revision()


def test_empty_database_has_no_revision(database_url: str) -> None:
    assert current_revision(database_url) is None
    upgrade(database_url)
    upgrade(database_url)  # again: nothing to do
    assert current_revision(database_url) == head_revision()


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    from storage.db import alembic_config

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def test_upgrade_from_0001_keeps_questions_and_marks_them_pending(database_url: str) -> None:
    upgrade(database_url, "0001")
    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(
                "INSERT INTO questions (channel, status, created_at) "
                "VALUES ('voice', 'waiting', '2026-11-01 10:00:00+00:00')")
        upgrade(database_url)
        with engine.connect() as connection:
            rows = connection.exec_driver_sql(
                "SELECT transcription_state, transcription_attempts FROM questions").all()
    finally:
        engine.dispose()
    assert [tuple(r) for r in rows] == [("pending", 0)]


def test_call_sid_unique_in_database(session_factory: sessionmaker[Session]) -> None:
    row = {"call_sid": "CA1", "from_number": "", "to_number": "", "started_at": NOW, "keys": []}
    with session_factory() as session:
        session.execute(insert(Call).values(**row))
        with pytest.raises(IntegrityError):
            session.execute(insert(Call).values(**row))


def test_caller_phone_and_recording_sid_unique_in_database(
    session_factory: sessionmaker[Session],
) -> None:
    with session_factory() as session:
        session.execute(insert(Caller).values(phone="+77011234567", first_seen=NOW, last_seen=NOW))
        with pytest.raises(IntegrityError), session.begin_nested():
            session.execute(
                insert(Caller).values(phone="+77011234567", first_seen=NOW, last_seen=NOW)
            )
        _record(session)
        other = Question(channel="voice", created_at=NOW)
        session.add(other)
        session.flush()
        with pytest.raises(IntegrityError), session.begin_nested():
            session.execute(
                insert(Recording).values(
                    recording_sid="RE1",
                    question_id=other.id,
                    call_sid="CA1",
                    source_url="",
                    created_at=NOW,
                    updated_at=NOW,
                )
            )


def test_foreign_keys_enforced(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as session, pytest.raises(IntegrityError):
        session.execute(insert(Question).values(caller_id=999, channel="voice", created_at=NOW))


def test_sqlite_engine_settings(tmp_path: Path) -> None:
    path = tmp_path / "new" / "folder" / "db.sqlite3"
    engine = make_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == (
                SQLITE_BUSY_TIMEOUT_MS)
            assert connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == (
                SQLITE_WAL_AUTOCHECKPOINT_PAGES)
        assert path.exists()
    finally:
        engine.dispose()


# --- unit of work -----------------------------------------------------------------------------


def test_unit_of_work_commits_or_rolls_back(session_factory: sessionmaker[Session]) -> None:
    with unit_of_work(session_factory) as session:
        start_call(session, call_sid="CA1", from_number="87011234567", to_number=HOTLINE, now=NOW)
    with pytest.raises(RuntimeError), unit_of_work(session_factory) as session:
        start_call(session, call_sid="CA2", from_number="87011234568", to_number=HOTLINE, now=NOW)
        raise RuntimeError("the request failed")
    with session_factory() as session:
        assert session.scalars(select(Call.call_sid)).all() == ["CA1"]
        assert session.scalars(select(Caller.phone)).all() == ["+77011234567"]


# Through SQLAlchemy, or raised by the driver itself (storage.db.DriverStatement).
READ_ONLY_ERRORS = (DBAPIError, sqlite3.Error, psycopg.Error)


@pytest.mark.parametrize("write", ["flush", "driver", "statement", "connection"])
def test_a_read_only_unit_that_writes_fails_and_the_next_unit_writes(
        session_factory: sessionmaker[Session], write: str) -> None:
    """A write slipped into read-only work raises at once (SQLite's query_only, PostgreSQL's
    READ ONLY transaction), writes nothing, and leaves the pooled connection writable."""
    with unit_of_work(session_factory) as session:
        start_call(session, call_sid="CA1", from_number="87011234567", to_number=HOTLINE, now=NOW)
    with pytest.raises(READ_ONLY_ERRORS, match="read-?only"), \
            unit_of_work(session_factory, read_only=True) as session:
        assert session.scalars(select(Call.call_sid)).all() == ["CA1"]
        if write == "flush":
            session.add(Caller(phone="+77011234568"))
            session.flush()
        elif write == "driver":  # storage.calls' statements run on the driver's cursor
            start_call(session, call_sid="CA2", from_number="87011234568", to_number=HOTLINE,
                       now=NOW)
        elif write == "statement":
            session.execute(text("UPDATE calls SET status = 'completed'"))
        else:
            session.connection().execute(text("DELETE FROM calls"))
    # The same pooled connection (one thread) is writable again, and nothing was written.
    with unit_of_work(session_factory) as session:
        start_call(session, call_sid="CA3", from_number="87011234569", to_number=HOTLINE, now=NOW)
    with unit_of_work(session_factory, read_only=True) as session:
        assert sorted(session.scalars(select(Call.call_sid))) == ["CA1", "CA3"]
        assert session.scalars(select(Call.status).where(Call.call_sid == "CA1")).one() != (
            "completed")


def test_a_read_only_unit_that_leaves_a_change_pending_fails_at_its_end(
        session_factory: sessionmaker[Session]) -> None:
    with pytest.raises(READ_ONLY_ERRORS, match="read-?only"), \
            unit_of_work(session_factory, read_only=True) as session:
        touch_caller(session, "+77011234567", NOW)  # flushed by the commit at the end
    with session_factory() as session:
        assert _count(session, Caller) == 0


def test_savepoint_is_part_of_the_outer_transaction(
    session_factory: sessionmaker[Session],
) -> None:
    # On SQLite the driver's own transaction handling would let a released savepoint commit.
    with pytest.raises(RuntimeError), unit_of_work(session_factory) as session:
        touch_caller(session, "+77011234567", NOW)
        raise RuntimeError("the request failed")
    with session_factory() as session:
        assert _count(session, Caller) == 0


@pytest.mark.parametrize("database_url", [pytest.param("postgresql", marks=pytest.mark.postgres)],
                         indirect=True)
@pytest.mark.parametrize(("sqlstate", "fails", "runs", "calls"), [
    ("40P01", 1, 2, ["CA1"]),  # deadlock_detected: run again
    ("40001", 2, 3, ["CA1"]),  # serialization_failure: run again, and again
    ("40P01", 3, 3, []),  # three aborts: the third is raised
    ("23505", 1, 1, []),  # unique_violation is the work's own fault: raised at once
])
def test_work_the_database_aborts_for_another_runs_again(
        session_factory: sessionmaker[Session], sqlstate: str, fails: int, runs: int,
        calls: list[str]) -> None:
    """retry_conflicts runs work again when PostgreSQL aborts its transaction for another's
    sake; what an aborted run wrote is gone, so the work is stored once."""
    ran: list[int] = []

    @retry_conflicts
    def work() -> str:
        ran.append(1)
        with unit_of_work(session_factory) as session:
            start_call(session, call_sid="CA1", from_number="87011234567", to_number=HOTLINE,
                       now=NOW)
            session.flush()
            if len(ran) <= fails:  # PostgreSQL's own error, with that SQLSTATE
                session.execute(text(f"DO $$ BEGIN RAISE EXCEPTION 'aborted' USING ERRCODE = "
                                     f"'{sqlstate}'; END $$"))
        return "stored"

    if calls:
        assert work() == "stored"
    else:
        with pytest.raises(DBAPIError) as raised:
            work()
        assert is_conflict(raised.value) == (sqlstate != "23505")
    assert len(ran) == runs
    with session_factory() as session:
        assert session.scalars(select(Call.call_sid)).all() == calls


def test_an_error_of_the_work_itself_is_no_conflict(
        session_factory: sessionmaker[Session]) -> None:
    # SQLite's errors (a busy database among them) have no SQLSTATE; PostgreSQL's says 42P01.
    with pytest.raises(DBAPIError) as raised, unit_of_work(session_factory) as session:
        session.execute(text("SELECT * FROM no_such_table"))
    assert not is_conflict(raised.value)
    assert not is_conflict(RuntimeError("40P01"))


# --- callers and calls ------------------------------------------------------------------------


def test_callers_are_normalised_and_unique(session_factory: sessionmaker[Session]) -> None:
    forms = ["8 701 123 45 67", "+7 (701) 123-45-67", "87011234567"]
    with unit_of_work(session_factory) as session:
        for number, form in enumerate(forms):
            start_call(
                session,
                call_sid=f"CA{number}",
                from_number=form,
                to_number=HOTLINE,
                now=NOW + timedelta(minutes=number),
            )
    with session_factory() as session:
        callers = session.scalars(select(Caller)).all()
        assert [caller.phone for caller in callers] == ["+77011234567"]
        assert callers[0].first_seen == NOW
        assert callers[0].last_seen == NOW + timedelta(minutes=2)
        calls = session.scalars(select(Call).order_by(Call.id)).all()
        assert {call.caller_id for call in calls} == {callers[0].id}
        assert [call.from_number for call in calls] == forms


def test_touch_caller_and_language(session_factory: sessionmaker[Session]) -> None:
    with unit_of_work(session_factory) as session:
        caller = touch_caller(session, "+77011234567", NOW)
        caller.language = "kk"  # not flushed yet: touching again must not read it away
        again = touch_caller(session, "+77011234567", NOW - timedelta(days=1))
        assert again is caller
    with session_factory() as session:
        stored = session.scalars(select(Caller)).one()
        assert (stored.language, stored.last_seen) == ("kk", NOW)
    with session_factory() as session, pytest.raises(ValueError):
        touch_caller(session, "8 701 123 45 67", NOW)


def test_touch_caller_concurrently_creates_one(session_factory: sessionmaker[Session],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    race = MeetBeforeFirstInsert("callers", monkeypatch)
    results = in_two_threads(
        session_factory,
        lambda session: touch_caller(session, "+77011234567", NOW).id,
        prepare=race,
    )
    race.check(session_factory)
    assert results[0] == results[1]
    with session_factory() as session:
        assert _count(session, Caller) == 1


def test_anonymous_call_has_no_caller(session_factory: sessionmaker[Session]) -> None:
    with unit_of_work(session_factory) as session:
        call = start_call(
            session, call_sid="CA1", from_number="anonymous", to_number=HOTLINE, now=NOW
        )
        assert call.caller_id is None
        assert call.from_number == "anonymous"
    with session_factory() as session:
        assert _count(session, Caller) == 0


def test_start_call_is_idempotent(session_factory: sessionmaker[Session]) -> None:
    with unit_of_work(session_factory) as session:
        first = start_call(
            session, call_sid="CA1", from_number="87011234567", to_number=HOTLINE, now=NOW
        )
    with unit_of_work(session_factory) as session:
        retry = start_call(
            session,
            call_sid="CA1",
            from_number="87011234567",
            to_number=HOTLINE,
            now=NOW + timedelta(seconds=15),
        )
        assert retry.id == first.id
        assert retry.started_at == NOW
    with session_factory() as session:
        assert _count(session, Call) == 1
        call = get_call(session, "CA1")
        assert call is not None
        assert (call.status, call.keys, call.last_node, call.ended_at) == (
            "in-progress",
            [],
            None,
            None,
        )
        assert get_call(session, "CA-unknown") is None


@pytest.mark.parametrize(("from_number", "first_table", "callers"), [
    ("87011234567", "callers", 1),  # the caller's row is the first write, then the call's
    ("anonymous", "calls", 0),  # no caller: the two calls' INSERTs race each other
])
def test_start_call_concurrently_creates_one(session_factory: sessionmaker[Session],
                                             from_number: str, first_table: str,
                                             callers: int,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    race = MeetBeforeFirstInsert(first_table, monkeypatch)
    results = in_two_threads(
        session_factory,
        lambda session: (
            start_call(
                session, call_sid="CA1", from_number=from_number, to_number=HOTLINE, now=NOW
            ).id
        ),
        prepare=race,
    )
    race.check(session_factory)
    assert results[0] == results[1]
    with session_factory() as session:
        assert (_count(session, Call), _count(session, Caller)) == (1, callers)


def test_update_call_status_before_start_call(session_factory: sessionmaker[Session]) -> None:
    ended = NOW + timedelta(minutes=3)
    with unit_of_work(session_factory) as session:
        call = update_call_status(
            session, call_sid="CA1", status="completed", now=ended, duration=180
        )
        assert (call.status, call.ended_at, call.duration, call.caller_id) == (
            "completed",
            ended,
            180,
            None,
        )
    with unit_of_work(session_factory) as session:
        # The incoming-call webhook arrives late: it fills in what the status callback lacked.
        call = start_call(
            session, call_sid="CA1", from_number="87011234567", to_number=HOTLINE, now=NOW
        )
        assert call.caller_id is not None
        # A late non-final status and a repeated final one change nothing that was settled.
        update_call_status(session, call_sid="CA1", status="in-progress", now=ended)
        update_call_status(
            session, call_sid="CA1", status="completed", now=ended + timedelta(minutes=1)
        )
    with session_factory() as session:
        call = session.scalars(select(Call)).one()
        assert (call.status, call.ended_at, call.duration) == ("completed", ended, 180)
        assert (call.from_number, call.to_number) == ("87011234567", HOTLINE)
        assert _count(session, Call) == 1


def test_a_status_callback_leaves_a_known_caller_alone(
        session_factory: sessionmaker[Session]) -> None:
    with unit_of_work(session_factory) as session:
        start_call(session, call_sid="CA1", from_number="87011234567", to_number=HOTLINE, now=NOW)
    with unit_of_work(session_factory) as session:
        update_call_status(session, call_sid="CA1", status="completed",
                           now=NOW + timedelta(minutes=5), from_number="+77011234567",
                           to_number=HOTLINE)
    with session_factory() as session:
        caller = session.scalars(select(Caller)).one()
        assert (caller.first_seen, caller.last_seen) == (NOW, NOW)  # seen when it came in
        assert get_call(session, "CA1").status == "completed"  # type: ignore[union-attr]


@pytest.mark.parametrize("status", ["completed", "busy", "failed", "no-answer", "canceled"])
def test_final_statuses_end_the_call(session_factory: sessionmaker[Session], status: str) -> None:
    with unit_of_work(session_factory) as session:
        start_call(session, call_sid="CA1", from_number="", to_number=HOTLINE, now=NOW)
        call = update_call_status(session, call_sid="CA1", status="ringing", now=NOW)
        assert call.ended_at is None
        call = update_call_status(session, call_sid="CA1", status=status, now=NOW)
        assert (call.status, call.ended_at) == (status, NOW)


def test_record_keys_keeps_order(session_factory: sessionmaker[Session]) -> None:
    presses = [("language", "1"), ("main", "2"), ("pensions", "*"), ("main", "0")]
    with unit_of_work(session_factory) as session:
        start_call(session, call_sid="CA1", from_number="87011234567", to_number=HOTLINE, now=NOW)
    for second, (node, digits) in enumerate(presses):
        with unit_of_work(session_factory) as session:
            record_keys(session, "CA1", node, digits, NOW + timedelta(seconds=second))
    with unit_of_work(session_factory) as session:
        record_keys(session, "CA-unknown", "main", "1", NOW)
    with session_factory() as session:
        call = get_call(session, "CA1")
        assert call is not None
        assert [(key["node"], key["digits"]) for key in call.keys] == presses
        assert [datetime.fromisoformat(key["at"]) for key in call.keys] == [
            NOW + timedelta(seconds=second) for second in range(len(presses))
        ]
        assert call.last_node == "main"
        assert _count(session, Call) == 1


def test_key_presses_at_the_same_moment_are_both_kept(
        session_factory: sessionmaker[Session]) -> None:
    with unit_of_work(session_factory) as session:
        start_call(session, call_sid="CA1", from_number="87011234567", to_number=HOTLINE, now=NOW)
    presses = iter(["1", "2"])

    def meet(session: Session, barrier: threading.Barrier) -> None:
        barrier.wait()  # both transactions start together; each appends in one UPDATE

    in_two_threads(session_factory,
                    lambda session: record_keys(session, "CA1", "main", next(presses), NOW),
                    prepare=meet)
    with session_factory() as session:
        call = get_call(session, "CA1")
        assert call is not None
        # Read, append in Python, write back (the code before) could lose one on PostgreSQL.
        assert sorted(key["digits"] for key in call.keys) == ["1", "2"]


def test_remember_language_sets_the_caller_of_the_call(
        session_factory: sessionmaker[Session]) -> None:
    with unit_of_work(session_factory) as session:
        start_call(session, call_sid="CA1", from_number="87011234567", to_number=HOTLINE, now=NOW)
        start_call(session, call_sid="CA2", from_number="anonymous", to_number=HOTLINE, now=NOW)
        start_call(session, call_sid="CA3", from_number="87011234568", to_number=HOTLINE, now=NOW)
    with unit_of_work(session_factory) as session:
        remember_language(session, "CA1", "kk")
        remember_language(session, "CA2", "ru")  # no caller: nothing to remember
        remember_language(session, "CA-unknown", "ru")
    with session_factory() as session:
        languages = {phone: language for phone, language in
                     session.execute(select(Caller.phone, Caller.language))}
        assert languages == {"+77011234567": "kk", "+77011234568": None}
    with unit_of_work(session_factory) as session:
        # The next call of the same caller hears it; a retried webhook changes nothing.
        assert answer_call(session, call_sid="CA4", from_number="+77011234567",
                           to_number=HOTLINE, now=NOW + timedelta(days=1)) == "kk"
        assert answer_call(session, call_sid="CA4", from_number="+77011234567",
                           to_number=HOTLINE, now=NOW + timedelta(days=1)) == "kk"
        assert answer_call(session, call_sid="CA5", from_number="anonymous",
                           to_number=HOTLINE, now=NOW) is None
    with session_factory() as session:
        assert _count(session, Call) == 5


def _commit_setting(executor: Session | Connection | DriverTransaction) -> str:
    """What the database does at this transaction's commit: wait for the disk or not."""
    bind = executor.get_bind() if isinstance(executor, Session) else executor
    sqlite = bind.dialect.name == "sqlite"
    query = text("PRAGMA synchronous" if sqlite else "SHOW synchronous_commit")
    if isinstance(executor, DriverTransaction):
        [(value,)] = DriverStatement(query).execute(executor, {})
    else:
        value = executor.execute(query).scalar_one()
    return ({1: "no wait", 2: "wait"} if sqlite else {"off": "no wait", "on": "wait"})[value]


def test_a_unit_of_work_that_need_not_be_durable_commits_without_waiting_for_the_disk(
        session_factory: sessionmaker[Session]) -> None:
    seen = []
    with unit_of_work(session_factory, durable=False) as session:
        seen.append(_commit_setting(session))
        start_call(session, call_sid="CA1", from_number="87011234567", to_number=HOTLINE, now=NOW)
    # The pool hands out the same connection again: durable is the default once more.
    with unit_of_work(session_factory) as session:
        seen.append(_commit_setting(session))
        record_keys(session, "CA1", "language", "2", NOW)
    with unit_of_work(session_factory, durable=False) as session:
        seen.append(_commit_setting(session))
    assert seen == ["no wait", "wait", "no wait"]
    with session_factory() as session:
        call = get_call(session, "CA1")
        assert call is not None and call.keys[0]["digits"] == "2"
    with pytest.raises(RuntimeError), unit_of_work(session_factory, durable=False) as session:
        start_call(session, call_sid="CA2", from_number="", to_number=HOTLINE, now=NOW)
        raise RuntimeError("the request failed")
    with session_factory() as session:
        assert get_call(session, "CA2") is None


@pytest.mark.parametrize("begin", [transaction, driver_transaction])
def test_a_transaction_on_a_connection_commits_or_rolls_back_durably_or_not(
        migrated_url: str, begin: Callable[..., Any]) -> None:
    """storage.db.transaction, and driver_transaction as the voice menus use it: the calls
    functions on a connection, committed, rolled back, waiting for the disk or not."""
    engine = make_engine(migrated_url)
    seen = []
    try:
        with begin(engine, durable=False) as connection:
            seen.append(_commit_setting(connection))
            assert answer_call(connection, call_sid="CA1", from_number="87011234567",
                               to_number=HOTLINE, now=NOW) is None
            remember_language(connection, "CA1", "ru")
            record_keys(connection, "CA1", "language", "2", NOW)
        with begin(engine) as connection:
            seen.append(_commit_setting(connection))
            assert answer_call(connection, call_sid="CA2", from_number="87011234567",
                               to_number=HOTLINE, now=NOW) == "ru"
        with pytest.raises(RuntimeError), begin(engine, durable=False) as connection:
            answer_call(connection, call_sid="CA3", from_number="87011234568",
                        to_number=HOTLINE, now=NOW)
            raise RuntimeError("the request failed")
        sessions = make_session_factory(engine)
        with sessions() as session:
            assert session.scalars(select(Call.call_sid).order_by(Call.id)).all() == [
                "CA1", "CA2"]
            assert session.scalars(select(Caller.phone)).all() == ["+77011234567"]
            call = get_call(session, "CA1")
            assert call is not None and [k["digits"] for k in call.keys] == ["2"]
    finally:
        engine.dispose()
    assert seen == ["no wait", "wait"]


@pytest.mark.postgres
def test_a_driver_transaction_whose_server_went_away_raises_its_own_error_and_recovers(
        postgres_url: str) -> None:
    """The server ends the connection mid-transaction (a restart): the request's own error is
    what is raised, not the failed rollback's, and the next transaction gets a live connection
    (the broken one is not lent out again)."""
    upgrade(postgres_url)
    engine, admin = make_engine(postgres_url), make_engine(postgres_url)
    try:
        with pytest.raises(RuntimeError, match="the request failed"), driver_transaction(
                engine, durable=False) as connection:
            [(pid,)] = DriverStatement(text("SELECT pg_backend_pid()")).execute(connection, {})
            with admin.connect() as other:
                other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            raise RuntimeError("the request failed")
        with driver_transaction(engine, durable=False) as connection:
            answer_call(connection, call_sid="CA1", from_number="87011234567",
                        to_number=HOTLINE, now=NOW)
        with engine.connect() as connection:
            assert connection.execute(text("SELECT call_sid FROM calls")).scalars().all() == [
                "CA1"]
    finally:
        engine.dispose()
        admin.dispose()


@pytest.mark.postgres
def test_the_webhook_engine_commits_without_waiting_and_survives_a_server_restart(
        postgres_url: str) -> None:
    """PostgreSQL's webhook engine (make_webhook_engine): commits and rollbacks of its own,
    no wait for the disk, no durable transaction and no SQLAlchemy transaction on it, and a
    pooled connection the server dropped (here: terminated between two webhooks, as a restart
    does) replaced before it is used, with no error for the request."""
    upgrade(postgres_url)
    engine = make_engine(postgres_url)
    webhooks = make_webhook_engine(postgres_url, engine)
    seen = []
    try:
        assert webhooks is not engine
        with driver_transaction(webhooks, durable=False) as connection:
            seen.append(_commit_setting(connection))
            answer_call(connection, call_sid="CA1", from_number="87011234567",
                        to_number=HOTLINE, now=NOW)
            [(pid,)] = DriverStatement(text("SELECT pg_backend_pid()")).execute(connection, {})
        with pytest.raises(ValueError, match="need not be durable"), driver_transaction(
                webhooks):
            pass
        with pytest.raises(RuntimeError), driver_transaction(
                webhooks, durable=False) as connection:
            answer_call(connection, call_sid="CA2", from_number="87011234568",
                        to_number=HOTLINE, now=NOW)
            raise RuntimeError("the request failed")
        terminate_backend(engine, pid)  # the pooled connection dies while it waits
        with driver_transaction(webhooks, durable=False) as connection:
            seen.append(_commit_setting(connection))
            record_keys(connection, "CA1", "language", "2", NOW)
        with webhooks.connect() as plain, pytest.raises(
                RuntimeError, match="driver_transaction only"), plain.begin():
            pass
        with make_session_factory(engine)() as session:
            assert session.scalars(select(Call.call_sid)).all() == ["CA1"]
            call = get_call(session, "CA1")
            assert call is not None and [k["digits"] for k in call.keys] == ["2"]
    finally:
        webhooks.dispose()
        engine.dispose()
    assert seen == ["no wait", "no wait"]


@pytest.mark.postgres
def test_postgres_connections_notice_a_vanished_server(postgres_url: str) -> None:
    """Both PostgreSQL engines' connections carry POSTGRES_CONNECT_DEFAULTS (read back from the
    kernel's socket: keepalives on, unacknowledged data given up after 5 s), and a value in
    the URL's own query wins over the default."""
    engine = make_engine(postgres_url)
    webhooks = make_webhook_engine(postgres_url, engine)
    own = make_engine(postgres_url + "?tcp_user_timeout=7000&connect_timeout=9")
    try:
        for each, user_timeout, connect_timeout in (
                (engine, 5000, "5"), (webhooks, 5000, "5"), (own, 7000, "9")):
            pooled = each.raw_connection()
            try:
                dbapi_connection: Any = pooled.dbapi_connection
                with socket.socket(fileno=os.dup(dbapi_connection.fileno())) as sock:
                    assert sock.getsockopt(socket.IPPROTO_TCP,
                                           socket.TCP_USER_TIMEOUT) == user_timeout
                    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
                    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 30
                parameters = dbapi_connection.info.get_parameters()
                assert parameters["connect_timeout"] == connect_timeout
            finally:
                pooled.close()
        pooled = webhooks.raw_connection()  # the webhook engine keeps its own option too
        try:
            with pooled.dbapi_connection.cursor() as cursor:
                cursor.execute("SHOW synchronous_commit")
                assert cursor.fetchone() == ("off",)
        finally:
            pooled.close()
    finally:
        own.dispose()
        webhooks.dispose()
        engine.dispose()


def test_on_sqlite_the_webhook_engine_is_the_engine(migrated_url: str) -> None:
    engine = make_engine(migrated_url)
    try:
        webhooks = make_webhook_engine(migrated_url, engine)
        assert (webhooks is engine) == migrated_url.startswith("sqlite")
        webhooks.dispose()
    finally:
        engine.dispose()


def test_a_driver_statement_stores_what_sqlalchemy_would(migrated_url: str) -> None:
    """The same row written by SQLAlchemy and by DriverStatement: the same stored values."""
    almaty = timezone(timedelta(hours=5))
    seen = datetime(2026, 12, 4, 14, 30, 15, 123456, tzinfo=almaty)
    callers = Caller.__table__
    seen_at = bindparam("seen", type_=UTCDateTime())
    statement = insert(callers).values(phone=bindparam("phone"), first_seen=seen_at,
                                       last_seen=seen_at, sms_opted_out=False,
                                       sms_awaiting_question=False)
    engine = make_engine(migrated_url)
    try:
        with transaction(engine) as connection:
            connection.execute(statement, {"phone": "+77011234567", "seen": seen})
            # (PostgreSQL's INSERT returns the new id: SQLAlchemy compiles it with RETURNING.)
            DriverStatement(statement).execute(connection, {"phone": "+77011234568", "seen": seen})
        with engine.connect() as connection:
            # As text: the two rows' stored timestamps and defaults, byte for byte.
            rows = connection.exec_driver_sql(
                "SELECT CAST(first_seen AS TEXT), CAST(last_seen AS TEXT), sms_opted_out "
                "FROM callers ORDER BY phone").all()
            assert rows[0] == rows[1]
        with make_session_factory(engine)() as session:
            stored = session.scalars(select(Caller).order_by(Caller.phone)).all()
            assert [c.first_seen for c in stored] == [seen, seen]
            assert stored[1].first_seen.tzinfo == UTC
        with engine.connect() as connection, pytest.raises(RuntimeError):
            DriverStatement(statement).execute(connection, {"phone": "+7701", "seen": seen})
        # Defaults SQLAlchemy computes in Python (sms_opted_out's False) would be NULL: refused.
        relying = insert(callers).values(phone=bindparam("phone"), first_seen=seen_at,
                                         last_seen=seen_at)
        with transaction(engine) as connection, pytest.raises(ValueError, match="sms_opted_out"):
            DriverStatement(relying).execute(connection, {"phone": "+7701", "seen": seen})
    finally:
        engine.dispose()


# --- questions and recordings -----------------------------------------------------------------


def test_record_question_is_idempotent(session_factory: sessionmaker[Session]) -> None:
    with unit_of_work(session_factory) as session:
        call = start_call(
            session, call_sid="CA1", from_number="87011234567", to_number=HOTLINE, now=NOW
        )
        question, recording, created = _record(
            session, duration=None, recording_url="", now=NOW + timedelta(minutes=1)
        )
        assert created
        assert (question.caller_id, question.call_id) == (call.caller_id, call.id)
    with unit_of_work(session_factory) as session:
        again, again_recording, created = _record(session, now=NOW + timedelta(minutes=2))
        assert not created
        assert (again.id, again_recording.id) == (question.id, recording.id)
    with session_factory() as session:
        assert (_count(session, Question), _count(session, Recording)) == (1, 1)
        stored = session.scalars(select(Question)).one()
        assert (stored.channel, stored.status, stored.language, stored.topic) == (
            "voice",
            "waiting",
            "kk",
            "pensions",
        )
        assert stored.caller is not None and stored.caller.phone == "+77011234567"
        assert stored.call is not None and stored.call.call_sid == "CA1"
        assert stored.recording is not None
        assert stored.recording.duration == 12  # filled in by the second delivery
        assert stored.recording.source_url == "https://api.twilio.com/Recordings/RE1"
        assert stored.recording.download_state == DOWNLOAD_PENDING
        assert stored.recording.download_attempts == 0
        assert stored.recording.question is stored


def test_record_question_without_known_call(session_factory: sessionmaker[Session]) -> None:
    with unit_of_work(session_factory) as session:
        question, recording, created = _record(session, call_sid="CA-unknown")
        assert created
        assert (question.caller_id, question.call_id, recording.call_sid) == (
            None,
            None,
            "CA-unknown",
        )


def test_record_question_concurrently_creates_one(
    session_factory: sessionmaker[Session],
) -> None:
    with unit_of_work(session_factory) as session:
        start_call(session, call_sid="CA1", from_number="87011234567", to_number=HOTLINE, now=NOW)

    def ask(session: Session) -> tuple[int, int, bool]:
        question, recording, created = _record(session)
        return question.id, recording.id, created

    race = MeetAfterFirstLookup(Recording)
    results = in_two_threads(session_factory, ask, prepare=race)
    race.check(session_factory)
    assert sorted(created for _, _, created in results) == [False, True]
    assert results[0][:2] == results[1][:2]
    with session_factory() as session:
        assert (_count(session, Question), _count(session, Recording)) == (1, 1)


def test_record_question_recovers_from_losing_the_race(
    session_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    with unit_of_work(session_factory) as session:
        question, recording, _ = _record(session)
    real_find = questions_module._find_recording
    lookups: list[str] = []

    def find_late(session: Session, recording_sid: str) -> Recording | None:
        # The first lookup misses, as if the other request had not committed yet.
        lookups.append(recording_sid)
        return None if len(lookups) == 1 else real_find(session, recording_sid)

    monkeypatch.setattr(questions_module, "_find_recording", find_late)
    with unit_of_work(session_factory) as session:
        start_call(session, call_sid="CA2", from_number="", to_number=HOTLINE, now=NOW)
        again, again_recording, created = _record(session)
        assert not created
        assert (again.id, again_recording.id) == (question.id, recording.id)
        # The failed insert was rolled back to its savepoint; the rest of the work survives.
        assert get_call(session, "CA2") is not None
    assert len(lookups) == 2
    with session_factory() as session:
        assert (_count(session, Question), _count(session, Recording)) == (1, 1)
        assert _count(session, Call) == 1


def test_waiting_questions_oldest_first(session_factory: sessionmaker[Session]) -> None:
    with unit_of_work(session_factory) as session:
        start_call(session, call_sid="CA1", from_number="87011234567", to_number=HOTLINE, now=NOW)
        _record(session, "RE-new", now=NOW + timedelta(hours=2))
        _record(session, "RE-old", now=NOW)
        closed, _, _ = _record(session, "RE-closed", now=NOW - timedelta(hours=1))
        closed.status = QUESTION_CLOSED
        _record(session, "RE-mid", now=NOW + timedelta(hours=1))
    with session_factory() as session:
        waiting = waiting_questions(session)
        first_two = waiting_questions(session, limit=2)
    # Read after the session closed: caller and recording were loaded with the questions.
    assert [q.recording.recording_sid for q in waiting if q.recording] == [
        "RE-old",
        "RE-mid",
        "RE-new",
    ]
    assert [q.caller.phone for q in waiting if q.caller] == ["+77011234567"] * 3
    assert [q.id for q in first_two] == [q.id for q in waiting[:2]]


def test_recording_download_lifecycle(session_factory: sessionmaker[Session]) -> None:
    with unit_of_work(session_factory) as session:
        _, first, _ = _record(session, "RE1", now=NOW)
        _, second, _ = _record(session, "RE2", now=NOW + timedelta(minutes=1))
        _, third, _ = _record(session, "RE3", now=NOW + timedelta(minutes=2))
    later = NOW + timedelta(hours=1)
    with unit_of_work(session_factory) as session:
        recording = get_recording(session, first.id)
        assert recording is not None
        count_download_attempt(session, recording, later)
        count_download_attempt(session, recording, later)
        mark_recording_stored(session, recording, "2025/03/RE1.wav", later)
        recording = get_recording(session, second.id)
        assert recording is not None
        count_download_attempt(session, recording, later)
        mark_recording_failed(session, recording, "HTTP 404", later)
        recording = get_recording(session, third.id)
        assert recording is not None
        mark_recording_failed(session, recording, "host not allowed", later, refused=True)
    with session_factory() as session:
        assert get_recording(session, 9999) is None
        stored = get_recording(session, first.id)
        assert stored is not None
        assert (stored.download_state, stored.file_path, stored.download_attempts) == (
            DOWNLOAD_STORED,
            "2025/03/RE1.wav",
            2,
        )
        assert (stored.last_error, stored.updated_at) == (None, later)
        to_fetch = recordings_to_fetch(session)
        assert [(r.recording_sid, r.download_state, r.last_error) for r in to_fetch] == [
            ("RE2", DOWNLOAD_FAILED, "HTTP 404"),
            ("RE3", DOWNLOAD_REFUSED, "host not allowed"),
        ]


# --- time -------------------------------------------------------------------------------------


def test_timestamps_come_back_aware_utc(session_factory: sessionmaker[Session]) -> None:
    local = datetime(2025, 3, 14, 14, 30, tzinfo=ALMATY)  # 09:30 UTC
    with unit_of_work(session_factory) as session:
        start_call(session, call_sid="CA1", from_number="87011234567", to_number=HOTLINE, now=local)
        update_call_status(session, call_sid="CA1", status="completed", now=local)
        _record(session, now=local)
    with session_factory() as session:
        call = session.scalars(select(Call)).one()
        caller = session.scalars(select(Caller)).one()
        question = session.scalars(select(Question)).one()
        recording = session.scalars(select(Recording)).one()
        stamps = [
            call.started_at,
            call.ended_at,
            caller.first_seen,
            caller.last_seen,
            question.created_at,
            recording.created_at,
            recording.updated_at,
        ]
        for stamp in stamps:
            assert stamp is not None
            assert stamp.tzinfo is not None and stamp.utcoffset() == timedelta(0)
            assert stamp == NOW
            assert (stamp.hour, stamp.minute) == (9, 30)
        # Queries compare in UTC too.
        assert session.scalars(select(Call.call_sid).where(Call.started_at == local)).all() == [
            "CA1"
        ]


def test_naive_times_are_refused(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as session:
        session.add(Caller(phone="+77011234567", first_seen=NOW, last_seen=datetime(2025, 1, 1)))
        with pytest.raises(Exception, match="naive datetime"):
            session.flush()


def test_sqlite_stores_utc_wall_clock(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hotline.sqlite3'}"
    upgrade(url)
    engine = make_engine(url)
    try:
        factory = make_session_factory(engine)
        with unit_of_work(factory) as session:
            touch_caller(session, "+77011234567", datetime(2025, 3, 14, 14, 30, tzinfo=ALMATY))
        with engine.connect() as connection:
            raw = connection.execute(text("SELECT first_seen FROM callers")).scalar()
        assert str(raw).startswith("2025-03-14 09:30:00")
    finally:
        engine.dispose()
