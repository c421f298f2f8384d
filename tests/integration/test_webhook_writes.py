"""What the voice webhooks write, through their engine (storage.db.make_webhook_engine).

On SQLite that engine is the app's own and the writes are the two-statement transactions of
storage.calls. On PostgreSQL it is a pool of autocommit connections, and answer_incoming_call
and record_menu_step each run one statement alone (a data-modifying WITH): these tests hold
both to the same results, on both databases, as the session-based tests in test_storage.py
hold answer_call and record_keys.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session

from storage.calls import (
    IncomingCaller,
    answer_incoming_call,
    get_call,
    record_menu_step,
    update_call_status,
)
from storage.db import (
    DriverStatement,
    make_engine,
    make_session_factory,
    make_webhook_engine,
    run_alone,
    runs_alone,
    unit_of_work,
    upgrade,
)
from storage.models import Call, Caller, Question
from storage.phones import normalise_phone
from tests.support import terminate_backend

NOW = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)
HOTLINE = "+77000000000"
PHONE = "+77011234567"


@pytest.fixture
def engines(migrated_url: str) -> Iterator[tuple[Engine, Engine]]:
    """The app's engine and the webhooks' (the same one on SQLite)."""
    engine = make_engine(migrated_url)
    webhooks = make_webhook_engine(migrated_url, engine)
    try:
        yield engine, webhooks
    finally:
        webhooks.dispose()
        engine.dispose()


def _session(engine: Engine) -> Session:
    return make_session_factory(engine)()


def _incoming(webhooks: Engine, call_sid: str, number: str = "87011234567",
              now: datetime = NOW) -> str | None:
    return answer_incoming_call(webhooks, call_sid=call_sid, phone=normalise_phone(number),
                                from_number=number, to_number=HOTLINE, now=now).language


def test_a_returning_callers_waiting_question_is_found_in_the_same_statement(
        engines: tuple[Engine, Engine]) -> None:
    """answer_incoming_call says whether a returning caller has a question waiting for a
    lawyer (on PostgreSQL inside its one statement), also one who never chose a language;
    never for a new number."""
    engine, webhooks = engines
    minutes = iter(range(1, 100))

    def incoming(call_sid: str, number: str = "87011234567") -> IncomingCaller:
        return answer_incoming_call(webhooks, call_sid=call_sid,
                                    phone=normalise_phone(number), from_number=number,
                                    to_number=HOTLINE, now=NOW + timedelta(minutes=next(minutes)))

    assert incoming("CA1") == IncomingCaller(None, False)
    with _session(engine) as session, session.begin():
        caller = session.scalars(select(Caller)).one()
        question = Question(caller_id=caller.id, channel="voice", status="waiting",
                            created_at=NOW)
        session.add(question)
    # No language yet (the question was left after silence on the language menu): told too.
    assert incoming("CA2") == IncomingCaller(None, True)
    record_menu_step(webhooks, "CA2", "language", "1", NOW, language="kk")
    assert incoming("CA3") == IncomingCaller("kk", True)
    assert incoming("CA4", "87019998877") == IncomingCaller(None, False)  # someone else
    for status, waiting in (("claimed", True), ("closed", False)):
        with _session(engine) as session, session.begin():
            session.scalars(select(Question)).one().status = status
        assert incoming(f"CA-{status}") == IncomingCaller("kk", waiting)


def test_the_postgresql_webhook_engine_runs_statements_alone(
        engines: tuple[Engine, Engine]) -> None:
    engine, webhooks = engines
    assert runs_alone(webhooks) == (engine.dialect.name == "postgresql")
    assert not runs_alone(engine)


def test_a_new_call_creates_its_caller_and_a_returning_caller_hears_their_language(
        engines: tuple[Engine, Engine]) -> None:
    engine, webhooks = engines
    assert _incoming(webhooks, "CA1") is None
    record_menu_step(webhooks, "CA1", "language", "2", NOW + timedelta(seconds=5), language="ru")
    record_menu_step(webhooks, "CA1", "main", "1", NOW + timedelta(seconds=9))
    later = NOW + timedelta(days=1)
    assert _incoming(webhooks, "CA2", now=later) == "ru"
    with _session(engine) as session:
        caller = session.scalars(select(Caller)).one()
        assert (caller.phone, caller.language, caller.first_seen, caller.last_seen) == (
            PHONE, "ru", NOW, later)
        first = get_call(session, "CA1")
        assert first is not None and first.caller_id == caller.id
        assert (first.from_number, first.to_number, first.status, first.last_node) == (
            "87011234567", HOTLINE, "in-progress", "main")
        assert [(k["node"], k["digits"]) for k in first.keys] == [("language", "2"), ("main", "1")]
        second = get_call(session, "CA2")
        assert second is not None and second.keys == [] and second.started_at == later


def test_twilio_retrying_the_incoming_webhook_changes_nothing(
        engines: tuple[Engine, Engine]) -> None:
    engine, webhooks = engines
    _incoming(webhooks, "CA1")
    record_menu_step(webhooks, "CA1", "language", "1", NOW, language="kk")
    # The same request again, late (a retry): no second call, no caller moved back in time.
    assert _incoming(webhooks, "CA1", now=NOW - timedelta(seconds=30)) == "kk"
    assert _incoming(webhooks, "CA1", now=NOW) == "kk"
    with _session(engine) as session:
        assert session.scalar(select(func.count()).select_from(Call)) == 1
        caller = session.scalars(select(Caller)).one()
        assert caller.last_seen == NOW
        call = get_call(session, "CA1")
        assert call is not None and len(call.keys) == 1 and call.started_at == NOW


def test_a_call_first_known_from_a_status_callback_is_filled_in(
        engines: tuple[Engine, Engine]) -> None:
    engine, webhooks = engines
    ended = NOW + timedelta(minutes=2)
    with unit_of_work(make_session_factory(engine)) as session:
        update_call_status(session, call_sid="CA1", status="completed", now=ended, duration=120)
    _incoming(webhooks, "CA1")
    with _session(engine) as session:
        call = get_call(session, "CA1")
        caller = session.scalars(select(Caller)).one()
        assert call is not None
        assert (call.caller_id, call.from_number, call.to_number) == (
            caller.id, "87011234567", HOTLINE)
        # What the status callback settled stays.
        assert (call.status, call.ended_at, call.duration) == ("completed", ended, 120)


def test_an_anonymous_call_has_no_caller_and_an_unknown_call_records_nothing(
        engines: tuple[Engine, Engine]) -> None:
    engine, webhooks = engines
    assert _incoming(webhooks, "CA1", number="anonymous") is None
    record_menu_step(webhooks, "CA1", "language", "2", NOW, language="ru")
    record_menu_step(webhooks, "CA9", "language", "2", NOW, language="ru")  # no such call
    with _session(engine) as session:
        call = get_call(session, "CA1")
        assert call is not None and call.caller_id is None and len(call.keys) == 1
        assert session.scalar(select(func.count()).select_from(Caller)) == 0
        assert get_call(session, "CA9") is None


def test_concurrent_first_calls_of_one_number_make_one_caller(
        engines: tuple[Engine, Engine]) -> None:
    """Eight webhooks at once for one new number (and two of them one CallSid): one caller,
    seven calls, on real concurrent connections."""
    engine, webhooks = engines
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def call(sid: str) -> Callable[[], None]:
        def run() -> None:
            try:
                start.wait(30)
                _incoming(webhooks, sid)
            except BaseException as error:  # noqa: BLE001 - reported below
                errors.append(error)
        return run

    sids = [f"CA{i}" for i in range(7)] + ["CA0"]
    threads = [threading.Thread(target=call(sid)) for sid in sids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    with _session(engine) as session:
        assert session.scalar(select(func.count()).select_from(Caller)) == 1
        assert session.scalar(select(func.count()).select_from(Call)) == 7
        assert session.scalar(select(func.count()).select_from(Call).where(
            Call.caller_id.is_(None))) == 0


@pytest.mark.postgres
def test_a_statement_run_alone_after_the_server_closed_its_connection(
        postgres_url: str) -> None:
    """A restart closes the pooled connections: the next webhook is answered, on a new one."""
    upgrade(postgres_url)
    engine = make_engine(postgres_url)
    webhooks = make_webhook_engine(postgres_url, engine)
    try:
        [(pid,)] = run_alone(webhooks, _backend_pid(), {}, durable=False)
        terminate_backend(engine, pid)
        assert _incoming(webhooks, "CA1") is None
        [(new_pid,)] = run_alone(webhooks, _backend_pid(), {}, durable=False)
        assert new_pid != pid
        with _session(engine) as session:
            assert get_call(session, "CA1") is not None
    finally:
        webhooks.dispose()
        engine.dispose()


def _backend_pid() -> DriverStatement:
    return DriverStatement(text("SELECT pg_backend_pid()"))


def test_on_postgresql_each_webhook_write_is_one_statement(
        engines: tuple[Engine, Engine], monkeypatch: pytest.MonkeyPatch) -> None:
    """One round trip per webhook on PostgreSQL (the data-modifying WITH statements); the two
    statements of a transaction on SQLite."""
    engine, webhooks = engines
    statements: list[str] = []
    run = DriverStatement.execute

    def counted(self: DriverStatement, connection: object, params: object) -> object:
        statements.append(str(self.statement))
        return run(self, connection, params)  # type: ignore[arg-type]

    monkeypatch.setattr(DriverStatement, "execute", counted)
    _incoming(webhooks, "CA1")
    incoming, statements[:] = list(statements), []
    record_menu_step(webhooks, "CA1", "language", "2", NOW, language="ru")
    menu = list(statements)
    if engine.dialect.name == "postgresql":
        assert len(incoming) == 1 and incoming[0].startswith("WITH caller AS")
        assert len(menu) == 1 and menu[0].startswith("WITH remembered AS")
    else:
        assert (len(incoming), len(menu)) == (2, 2)
    with _session(engine) as session:
        assert session.scalars(select(Caller.language)).one() == "ru"

