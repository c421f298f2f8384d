"""Callers and calls: what the voice webhooks record. Functions flush but never commit."""

from __future__ import annotations

import re
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage.models import CALL_FINAL_STATUSES, CALL_IN_PROGRESS, Call, Caller
from storage.phones import normalise_phone
from storage.utc import ensure_utc

_E164 = re.compile(r"\+[1-9]\d{1,14}")


def _find_caller(session: Session, phone: str) -> Caller | None:
    return session.scalars(select(Caller).where(Caller.phone == phone)).one_or_none()


def touch_caller(session: Session, phone: str, now: datetime) -> Caller:
    """Return the caller with this E.164 phone, creating it, and note that they were seen now."""
    if not _E164.fullmatch(phone):
        raise ValueError(f"not an E.164 phone number: {phone!r} (use normalise_phone first)")
    caller = _find_caller(session, phone)
    if caller is None:
        candidate = Caller(phone=phone, first_seen=now, last_seen=now)
        try:
            # The savepoint keeps the session usable if a concurrent request inserted it first.
            with session.begin_nested():
                session.add(candidate)
            return candidate
        except IntegrityError:
            caller = _find_caller(session, phone)
            if caller is None:
                raise
    if ensure_utc(now) > caller.last_seen:
        caller.last_seen = now
    return caller


def set_caller_language(session: Session, caller: Caller, language: str) -> None:
    """Remember the language the caller chose."""
    caller.language = language
    session.flush()


def _caller_for_number(
    session: Session, from_number: str, now: datetime, region: str
) -> Caller | None:
    phone = normalise_phone(from_number, region)
    return touch_caller(session, phone, now) if phone else None


def get_call(session: Session, call_sid: str) -> Call | None:
    """Return the call with this CallSid, or None."""
    return session.scalars(select(Call).where(Call.call_sid == call_sid)).one_or_none()


def _get_or_create_call(
    session: Session, call_sid: str, from_number: str, to_number: str, now: datetime, region: str
) -> Call:
    call = get_call(session, call_sid)
    if call is None:
        caller = _caller_for_number(session, from_number, now, region)
        candidate = Call(
            call_sid=call_sid,
            caller_id=caller.id if caller else None,
            from_number=from_number,
            to_number=to_number,
            status=CALL_IN_PROGRESS,
            started_at=now,
            keys=[],
        )
        try:
            with session.begin_nested():
                session.add(candidate)
            return candidate
        except IntegrityError:
            call = get_call(session, call_sid)
            if call is None:
                raise
    # The row may have been made by a status callback that knew less than this request.
    if not call.from_number and from_number:
        call.from_number = from_number
    if not call.to_number and to_number:
        call.to_number = to_number
    if call.caller_id is None:
        caller = _caller_for_number(session, call.from_number, now, region)
        if caller is not None:
            call.caller_id = caller.id
    return call


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
    call = _get_or_create_call(session, call_sid, from_number, to_number, now, region)
    session.flush()
    return call


def record_keys(session: Session, call_sid: str, node: str, digits: str, now: datetime) -> None:
    """Append the keys pressed at a menu node to the call's history."""
    call = get_call(session, call_sid)
    if call is None:
        return
    entry = {"node": node, "digits": digits, "at": ensure_utc(now).isoformat()}
    # A new list, so the ORM sees the change (the JSON column does not track mutation).
    call.keys = [*call.keys, entry]
    call.last_node = node
    session.flush()


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
    call = _get_or_create_call(session, call_sid, from_number, to_number, now, region)
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
