"""Callers and calls: what the voice webhooks record. Functions flush but never commit."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any, NamedTuple, cast

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Insert,
    Table,
    bindparam,
    case,
    exists,
    false,
    func,
    literal_column,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from storage.db import (
    DriverStatement,
    DriverTransaction,
    driver_transaction,
    run_alone,
    runs_alone,
)
from storage.models import (
    CALL_FINAL_STATUSES,
    CALL_IN_PROGRESS,
    QUESTION_CLAIMED,
    QUESTION_WAITING,
    Call,
    Caller,
    Question,
)
from storage.phones import normalise_phone
from storage.utc import UTCDateTime, ensure_utc

_E164 = re.compile(r"\+[1-9]\d{1,14}")


def _require_e164(phone: str) -> None:
    """Refuse a caller's number that normalise_phone did not make (callers.phone is E.164)."""
    if not _E164.fullmatch(phone):
        raise ValueError(f"not an E.164 phone number: {phone!r} (use normalise_phone first)")
# The tables under the models: statements on them skip the ORM's per-statement planning.
_callers, _calls = cast(Table, Caller.__table__), cast(Table, Call.__table__)
_questions = cast(Table, Question.__table__)
# A question waiting for a lawyer, or being handled by one. Not IN (...): an expanding
# parameter, which DriverStatement cannot run.
_QUESTION_OPEN = or_(_questions.c.status == QUESTION_WAITING,
                     _questions.c.status == QUESTION_CLAIMED)
# Whether a number has such a question (callers.phone's unique index, then questions.caller_id's
# index): a plain-integer row or none. In the incoming call's transaction on SQLite; on
# PostgreSQL the same read is part of _upserts' single statement.
_QUESTION_WAITING = DriverStatement(
    select(_questions.c.id)
    .join(_callers, _callers.c.id == _questions.c.caller_id)
    .where(_callers.c.phone == bindparam("phone"), _QUESTION_OPEN)
    .limit(1))
# What runs the statements of the voice menus: a session, a connection of storage.db.transaction,
# or (the webhooks, which need no ORM objects) a storage.db.driver_transaction.
Executor = Session | Connection | DriverTransaction


def _connection(executor: Executor) -> Connection | DriverTransaction:
    """The connection the statements run on: a session's, in its transaction, after a flush.

    The statements go to the driver directly (DriverStatement), past the session's autoflush:
    flushing here first, they see what the session holds, as session.execute would.
    """
    if isinstance(executor, Session):
        executor.flush()
        return executor.connection()
    return executor


def touch_caller(session: Session, phone: str, now: datetime) -> Caller:
    """Return the caller with this E.164 phone, creating it, and note that they were seen now."""
    _require_e164(phone)
    caller_id, _language = _upsert_caller(session, phone, now)
    # populate_existing: the upsert went around the ORM; a Caller this session holds is re-read.
    caller = session.get(Caller, caller_id, populate_existing=True)
    assert caller is not None  # the upsert returned its id in this transaction
    return caller


def get_call(session: Session, call_sid: str) -> Call | None:
    """Return the call with this CallSid, or None."""
    return session.scalars(select(Call).where(Call.call_sid == call_sid)).one_or_none()


@dataclass(frozen=True)
class _Upserts:
    """The statements of every incoming call, built once per dialect (see _upserts)."""

    caller: DriverStatement
    call: DriverStatement
    # PostgreSQL: both in one statement (a data-modifying WITH), for answer_incoming_call.
    both: DriverStatement | None


@cache
def _upserts(dialect: str) -> _Upserts:
    """Build the caller and call upserts for the dialect (INSERT ... ON CONFLICT DO UPDATE).

    Built once, with bound parameters: building them (the EXCLUDED alias and its columns) cost
    more than running them; compiled once and run on the driver's cursor (DriverStatement).
    """
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    now = bindparam("now", type_=UTCDateTime())
    caller = insert(_callers).values(
        phone=bindparam("phone"), first_seen=now, last_seen=now, sms_opted_out=False,
        sms_awaiting_question=False)
    caller_upsert = caller.on_conflict_do_update(
        index_elements=[_callers.c.phone],
        # A late request (a retry, an out-of-order status callback) never moves it back.
        set_={"last_seen": case((caller.excluded.last_seen > _callers.c.last_seen,
                                 caller.excluded.last_seen), else_=_callers.c.last_seen)},
    ).returning(_callers.c.id, _callers.c.language,
                # Whether the row was there before this call (first seen earlier): a
                # comparison, not the value, as DriverStatement processes no result types.
                # (Not OR-ed with the language here: SQLite 3.40 answers 1 for
                # "first_seen < ? OR language IS NOT NULL" in a RETURNING clause where
                # both sides are false.)
                (_callers.c.first_seen < now).label("seen_before"))

    def call_upsert(caller_id: ColumnElement[Any]) -> Insert:
        call = insert(_calls).values(
            call_sid=bindparam("call_sid"), caller_id=caller_id,
            from_number=bindparam("from_number"), to_number=bindparam("to_number"),
            status=CALL_IN_PROGRESS, started_at=now,
            # A constant in the SQL: a bound [] went through the JSON type's json.dumps.
            keys=literal_column("'[]'", type_=_calls.c["keys"].type))
        # A row made earlier by a status callback that knew less is filled in.
        return call.on_conflict_do_update(
            index_elements=[_calls.c.call_sid],
            set_={
                "from_number": case((_calls.c.from_number == "", call.excluded.from_number),
                                    else_=_calls.c.from_number),
                "to_number": case((_calls.c.to_number == "", call.excluded.to_number),
                                  else_=_calls.c.to_number),
                "caller_id": func.coalesce(_calls.c.caller_id, call.excluded.caller_id),
            },
        )

    both = None
    if dialect == "postgresql":
        # The main query reads the caller's upsert, so it runs first and its row is locked
        # before the call's (callers before calls, as everywhere); the call's upsert, read by
        # nobody, runs to completion at the end of the statement.
        caller_cte = caller_upsert.cte("caller")
        call_cte = call_upsert(select(caller_cte.c.id).scalar_subquery()).cte("call")
        # Whether a question of theirs waits for a lawyer: asked of a returning caller only
        # (CASE does not evaluate the rest for a new number).
        waiting = case((or_(caller_cte.c.seen_before, caller_cte.c.language.is_not(None)),
                        exists().where(_questions.c.caller_id == caller_cte.c.id,
                                       _QUESTION_OPEN)), else_=false())
        both = DriverStatement(select(caller_cte.c.language, waiting).add_cte(call_cte))
    return _Upserts(caller=DriverStatement(caller_upsert),
                    call=DriverStatement(call_upsert(bindparam("caller_id"))), both=both)


def _upsert_caller(executor: Executor, phone: str, now: datetime) -> tuple[int, str | None]:
    """Insert the caller, or note that they were seen now; return (id, language).

    One statement (INSERT ... ON CONFLICT DO UPDATE ... RETURNING): the unique phone column
    settles a race between two requests.
    """
    caller_id, language, _returning = _upsert_returning_caller(executor, phone, now)
    return caller_id, language


def _upsert_returning_caller(executor: Executor, phone: str,
                             now: datetime) -> tuple[int, str | None, bool]:
    """_upsert_caller, and whether the caller was there before (first seen before now, or a
    language chosen: the same instant again is a retry of the call that made the row)."""
    connection = _connection(executor)
    statement = _upserts(connection.dialect.name).caller
    [(caller_id, language, seen_before)] = statement.execute(connection,
                                                             {"phone": phone, "now": now})
    return caller_id, language, bool(seen_before) or language is not None


def answer_call(
    executor: Executor,
    *,
    call_sid: str,
    from_number: str,
    to_number: str,
    now: datetime,
    region: str = "KZ",
) -> str | None:
    """Record a call (once per CallSid) and its caller; return the caller's remembered language.

    A row made earlier by a status callback that knew less is filled in (numbers, caller), and
    its start time and status are kept.
    """
    return answer_numbered_call(executor, call_sid=call_sid, phone=normalise_phone(
        from_number, region), from_number=from_number, to_number=to_number, now=now)


def answer_numbered_call(
    executor: Executor,
    *,
    call_sid: str,
    phone: str | None,
    from_number: str,
    to_number: str,
    now: datetime,
) -> str | None:
    """answer_call for a caller's number already normalised (normalise_phone; None: no caller).

    For the incoming-call webhook, which normalises before its transaction begins: on SQLite
    the transaction holds the one write lock, and parsing a number takes about 20 µs.
    Two statements, no ORM objects: this is the path of every incoming call
    (bench/webhook_throughput.py).
    """
    return _answer_numbered_call(executor, call_sid=call_sid, phone=phone,
                                 from_number=from_number, to_number=to_number, now=now)[0]


def _answer_numbered_call(executor: Executor, *, call_sid: str, phone: str | None,
                          from_number: str, to_number: str,
                          now: datetime) -> tuple[str | None, bool]:
    """answer_numbered_call, and whether the caller was seen before this call."""
    if phone is not None:
        _require_e164(phone)
    connection = _connection(executor)
    caller_id, language, returning = (_upsert_returning_caller(connection, phone, now)
                                      if phone else (None, None, False))
    _upserts(connection.dialect.name).call.execute(connection, {
        "call_sid": call_sid, "caller_id": caller_id, "from_number": from_number,
        "to_number": to_number, "now": now})
    return language, returning


class IncomingCaller(NamedTuple):
    """What the incoming-call webhook learns of its caller."""

    # The language they chose before (None: a new number, or one that never chose).
    language: str | None
    # A returning caller with a question waiting for a lawyer (with or without a language:
    # one who never chose a language may have left a question after silence).
    waiting: bool


def answer_incoming_call(
    engine: Engine,
    *,
    call_sid: str,
    phone: str | None,
    from_number: str,
    to_number: str,
    now: datetime,
) -> IncomingCaller:
    """answer_numbered_call as a transaction of its own that need not be durable (see
    storage.db.unit_of_work): what the incoming-call webhook writes; and, for a returning
    caller, whether a question of theirs waits for a lawyer.

    On the PostgreSQL webhook engine (storage.db.make_webhook_engine) both upserts, and the
    question's read, are one statement run alone: one round trip to the server instead of four,
    which were most of a webhook's time there (bench/webhook_throughput.py).
    """
    both = _upserts(engine.dialect.name).both
    if phone and both is not None and runs_alone(engine):
        _require_e164(phone)
        [(language, waiting)] = run_alone(engine, both, {
            "phone": phone, "call_sid": call_sid, "from_number": from_number,
            "to_number": to_number, "now": now}, durable=False)
        return IncomingCaller(cast(str | None, language), bool(waiting))
    with driver_transaction(engine, durable=False) as connection:
        language, returning = _answer_numbered_call(
            connection, call_sid=call_sid, phone=phone, from_number=from_number,
            to_number=to_number, now=now)
        waiting = bool(returning and phone and _QUESTION_WAITING.execute(
            connection, {"phone": phone}))
        return IncomingCaller(language, waiting)


def has_open_question(engine: Engine, phone: str) -> bool:
    """Whether a question of this number waits for a lawyer or is being handled (the voice
    menu asks only on its rare way to the offer to record, hotline.voice.menu)."""
    with driver_transaction(engine, durable=False) as connection:
        return bool(_QUESTION_WAITING.execute(connection, {"phone": phone}))


def start_call(
    session: Session,
    *,
    call_sid: str,
    from_number: str,
    to_number: str,
    now: datetime,
    region: str = "KZ",
) -> Call:
    """Record an incoming call, or return the one already recorded under this CallSid."""
    answer_call(session, call_sid=call_sid, from_number=from_number, to_number=to_number,
                now=now, region=region)
    return _load_call(session, call_sid)


def _load_call(session: Session, call_sid: str) -> Call:
    # populate_existing: the upsert went around the ORM; a Call this session holds is re-read.
    return session.scalars(
        select(Call).where(Call.call_sid == call_sid).execution_options(populate_existing=True)
    ).one()


# Append one entry to the JSON list of keys, in SQL: no read of the row, one statement.
_PG_APPEND_KEYS = (
    "UPDATE calls SET keys = (coalesce(keys::jsonb, '[]'::jsonb) "
    "|| jsonb_build_array(CAST(:entry AS jsonb)))::json, "
    "last_node = :node WHERE call_sid = :call_sid")
_APPEND_KEYS = {
    "sqlite": DriverStatement(text(
        "UPDATE calls SET keys = json_insert(coalesce(keys, '[]'), '$[#]', json(:entry)), "
        "last_node = :node WHERE call_sid = :call_sid")),
    "postgresql": DriverStatement(text(_PG_APPEND_KEYS)),
}


def record_keys(executor: Executor, call_sid: str, node: str, digits: str,
                now: datetime) -> None:
    """Append the keys pressed at a menu node to the call's history (nothing if no such call).

    It locks the call's row: in a transaction that also writes the caller's row, write that one
    first, as answer_call does (callers before calls: two requests of one call never deadlock).
    """
    connection = _connection(executor)
    _APPEND_KEYS[connection.dialect.name].execute(
        connection, _keys_params(call_sid, node, digits, now))


def _keys_params(call_sid: str, node: str, digits: str, now: datetime) -> dict[str, str]:
    """The parameters of _APPEND_KEYS: one entry of the call's key history."""
    entry = {"node": node, "digits": digits, "at": ensure_utc(now).isoformat()}
    return {"entry": json.dumps(entry), "node": node, "call_sid": call_sid}


# PostgreSQL: remember_language and record_keys in one statement (record_menu_step). The main
# UPDATE's condition reads the language's UPDATE, so that one runs first and the caller's row is
# locked before the call's (callers before calls; EXPLAIN shows the condition as a one-time
# filter above the scan of calls); with no such call, neither changes a row.
_REMEMBER_AND_APPEND = DriverStatement(text(
    "WITH remembered AS (UPDATE callers SET language = :language WHERE id = "
    "(SELECT caller_id FROM calls WHERE call_sid = :call_sid) RETURNING callers.id) "
    + _PG_APPEND_KEYS + " AND (SELECT count(*) FROM remembered) >= 0"))


def record_menu_step(engine: Engine, call_sid: str, node: str, digits: str, now: datetime,
                     language: str | None = None) -> None:
    """What the menu webhook writes, as a transaction of its own that need not be durable:
    the keys pressed (record_keys) and, when the caller chose one, their language
    (remember_language). One statement run alone on the PostgreSQL webhook engine (see
    answer_incoming_call)."""
    if runs_alone(engine):
        params = _keys_params(call_sid, node, digits, now)
        if language:
            run_alone(engine, _REMEMBER_AND_APPEND, {**params, "language": language},
                      durable=False)
        else:
            run_alone(engine, _APPEND_KEYS[engine.dialect.name], params, durable=False)
        return
    with driver_transaction(engine, durable=False) as connection:
        # The caller's row before the call's, as everywhere (record_keys).
        if language:
            remember_language(connection, call_sid, language)
        record_keys(connection, call_sid, node, digits, now)


# On the tables, not the classes (an ORM UPDATE costs a bulk-update plan each time), and built
# once, like _upserts.
_REMEMBER_LANGUAGE = DriverStatement(update(_callers).where(
    _callers.c.id == select(_calls.c.caller_id)
    .where(_calls.c.call_sid == bindparam("call_sid")).scalar_subquery()
).values(language=bindparam("language")))


def remember_language(executor: Executor, call_sid: str, language: str) -> None:
    """Remember the language chosen on this call for its caller (nothing for an unknown one)."""
    _REMEMBER_LANGUAGE.execute(_connection(executor),
                               {"call_sid": call_sid, "language": language})


def update_call_status(
    session: Session,
    *,
    call_sid: str,
    status: str,
    now: datetime,
    duration: int | None = None,
    from_number: str = "",
    to_number: str = "",
    region: str = "KZ",
) -> Call:
    """Record Twilio's status for a call, creating the call if this is the first we hear of it."""
    call = get_call(session, call_sid)
    if call is None or call.caller_id is None:
        # New, or made without a caller: the upserts add what this request knows. A call with
        # its caller leaves the caller's row alone (last seen when the call came in).
        answer_call(session, call_sid=call_sid, from_number=from_number, to_number=to_number,
                    now=now, region=region)
        call = _load_call(session, call_sid)
    elif not call.to_number and to_number:
        call.to_number = to_number
    final = status in CALL_FINAL_STATUSES
    # Status callbacks can arrive out of order: a late "ringing" must not reopen an ended call.
    if final or call.ended_at is None:
        call.status = status
    if final and call.ended_at is None:
        call.ended_at = now
    if duration is not None:
        call.duration = duration
    session.flush()
    return call
