"""SMS messages in and out, opt-outs, and the little state an SMS conversation needs."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import ColumnElement, and_, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage.models import (
    CHANNEL_SMS,
    QUESTION_CLOSED,
    QUESTION_WAITING,
    SMS_FAILED,
    SMS_IN,
    SMS_OUT,
    SMS_QUEUED,
    SMS_RECEIVED,
    SMS_UNDELIVERED,
    Caller,
    Question,
    SmsMessage,
)
from storage.queue import note_new_question
from storage.retention import is_pseudonym, pseudonym, rejoin_returning


def record_inbound(
    session: Session,
    *,
    message_sid: str,
    phone: str,
    body: str,
    caller: Caller | None,
    now: datetime,
) -> tuple[SmsMessage, bool]:
    """Store an incoming SMS once per MessageSid; return it and whether it is new."""
    existing = find_by_sid(session, message_sid)
    if existing is not None:
        return existing, False
    message = SmsMessage(message_sid=message_sid, direction=SMS_IN, phone=phone, body=body,
                         caller_id=caller.id if caller else None, status=SMS_RECEIVED,
                         created_at=now, updated_at=now)
    try:
        with session.begin_nested():
            session.add(message)
    except IntegrityError:
        # Twilio retried while the first request was still working: that one owns the message.
        existing = find_by_sid(session, message_sid)
        if existing is None:
            raise
        return existing, False
    return message, True


def find_by_sid(session: Session, message_sid: str) -> SmsMessage | None:
    """Return the message with this MessageSid, or None."""
    return session.scalars(
        select(SmsMessage).where(SmsMessage.message_sid == message_sid)
    ).one_or_none()


def queue_outbound(
    session: Session,
    *,
    phone: str,
    body: str,
    language: str | None,
    caller: Caller | None,
    question_id: int | None,
    encoding: str,
    segments: int,
    now: datetime,
    purpose: str | None = None,
) -> SmsMessage:
    """Store an SMS to send (a job sends it and records Twilio's MessageSid)."""
    message = SmsMessage(direction=SMS_OUT, phone=phone, body=body, language=language,
                         caller_id=caller.id if caller else None, question_id=question_id,
                         status=SMS_QUEUED, encoding=encoding, segments=segments,
                         purpose=purpose, created_at=now, updated_at=now)
    session.add(message)
    session.flush()
    return message


def record_reply(
    session: Session, *, to: SmsMessage, body: str, encoding: str, segments: int, now: datetime
) -> SmsMessage:
    """Store the reply the webhook gave (sent by Twilio with the webhook's response)."""
    message = SmsMessage(direction=SMS_OUT, phone=to.phone, body=body, caller_id=to.caller_id,
                         language=to.language, question_id=to.question_id, status="replied",
                         encoding=encoding, segments=segments, created_at=now, updated_at=now)
    session.add(message)
    session.flush()
    return message


def count_inbound_since(session: Session, phone: str, since: datetime) -> int:
    """How many SMS the number has sent since then."""
    return session.scalar(
        select(func.count()).select_from(SmsMessage).where(
            SmsMessage.phone == phone, SmsMessage.direction == SMS_IN,
            SmsMessage.created_at >= since)
    ) or 0


def previous_inbound(session: Session, phone: str, before: SmsMessage) -> SmsMessage | None:
    """The number's last message before this one (by arrival order), if any."""
    return session.scalars(
        select(SmsMessage).where(SmsMessage.phone == phone, SmsMessage.direction == SMS_IN,
                                 SmsMessage.id < before.id)
        .order_by(SmsMessage.id.desc()).limit(1)).first()


def count_sms_questions_since(session: Session, caller: Caller, since: datetime) -> int:
    """How many SMS questions the caller has put in the queue since then."""
    return session.scalar(
        select(func.count()).select_from(Question).where(
            Question.caller_id == caller.id, Question.channel == CHANNEL_SMS,
            Question.created_at >= since)
    ) or 0


def add_sms_question(
    session: Session, *, caller: Caller | None, text: str, language: str | None,
    topic: str | None, now: datetime, pseudonym_key: bytes | None = None,
) -> Question:
    """Put a resident's SMS question in the consultants' queue (with pseudonym_key, joined to
    the resident's pseudonymised earlier record first: storage.retention.rejoin_returning)."""
    question = Question(caller_id=caller.id if caller else None, channel=CHANNEL_SMS,
                        language=language, topic=topic, status=QUESTION_WAITING, text=text,
                        created_at=now, transcription_state="done")
    session.add(question)
    session.flush()
    if pseudonym_key is not None:
        rejoin_returning(session, question.caller_id, pseudonym_key)
    note_new_question(session, question)  # repeat caller? its place in the queue
    return question


# An open question takes later messages up to this size (then they are only in the history).
MAX_ADDED_TEXT = 4000


def keep_sms_text(
    session: Session, *, caller: Caller, text: str, language: str | None, topic: str | None,
    now: datetime, pseudonym_key: bytes | None = None,
) -> Question | None:
    """Keep what a resident writes past the SMS limits where a lawyer reads it: added to the
    caller's newest open SMS question, or, when none is open, a question of its own. Return
    that question; None when the open one is full (MAX_ADDED_TEXT: the message stays in the
    caller's SMS history). One number's messages never fill the queue, and none is lost."""
    question = session.scalars(
        select(Question).where(Question.caller_id == caller.id,
                               Question.channel == CHANNEL_SMS,
                               Question.status != QUESTION_CLOSED)
        .order_by(Question.created_at.desc(), Question.id.desc()).limit(1)
    ).first()
    if question is None:
        return add_sms_question(session, caller=caller, text=text, language=language,
                                topic=topic, now=now, pseudonym_key=pseudonym_key)
    if len(question.text or "") + len(text) > MAX_ADDED_TEXT:
        return None
    question.text = f"{question.text}\n\n{text}" if question.text else text
    return question


def set_opted_out(session: Session, caller: Caller, opted_out: bool, now: datetime, *,
                  key: bytes) -> None:
    """Record STOP (nothing more is sent) or START.

    START also lifts an opt-out kept on the caller's pseudonymised record (see opted_out), so
    that retention, joining the two records later, does not bring it back.
    """
    caller.sms_opted_out = opted_out
    caller.sms_opted_out_at = now if opted_out else None
    if not opted_out:
        earlier = _earlier_opt_out(session, caller.phone, key)
        if earlier is not None:
            earlier.sms_opted_out, earlier.sms_opted_out_at = False, None
    session.flush()


def opted_out(session: Session, caller: Caller | None, key: bytes, *,
              phone: str | None = None) -> bool:
    """Tell whether the resident said STOP (and not START since), before or after retention.

    Retention replaces the number of a caller not heard from for long with its pseudonym (an
    HMAC keyed with key). A resident who said STOP and comes back later gets a new record with
    the number; until retention joins the two, their STOP is on the old record only, and it
    still holds: nothing is sent to them. With no caller record, phone is the number looked up.
    """
    if caller is not None:
        if caller.sms_opted_out:
            return True
        phone = caller.phone
    return _earlier_opt_out(session, phone, key) is not None


def _earlier_opt_out(session: Session, phone: str | None, key: bytes) -> Caller | None:
    if not phone or is_pseudonym(phone):
        return None
    return session.scalars(select(Caller).where(
        Caller.phone == pseudonym(phone, key), Caller.sms_opted_out)).one_or_none()


def sent_for(session: Session, purpose: str, *, question_id: int | None = None,
             caller_id: int | None = None, since: datetime | None = None) -> bool:
    """Whether an automatic SMS of this purpose was queued for the question, or for the
    caller (since a moment)."""
    statement = select(SmsMessage.id).where(SmsMessage.direction == SMS_OUT,
                                            SmsMessage.purpose == purpose)
    if question_id is not None:
        statement = statement.where(SmsMessage.question_id == question_id)
    if caller_id is not None:
        statement = statement.where(SmsMessage.caller_id == caller_id)
    if since is not None:
        statement = statement.where(SmsMessage.created_at > since)
    return session.scalar(statement.limit(1)) is not None


def has_open_question(session: Session, caller_id: int) -> bool:
    """Whether a question of the caller waits for a lawyer (waiting, or being handled)."""
    return session.scalar(
        select(Question.id).where(Question.caller_id == caller_id,
                                  Question.status != QUESTION_CLOSED).limit(1)) is not None


def is_sms_answer() -> ColumnElement[bool]:
    """An SMS that answers a question: one a consultant wrote (not an automatic one) that was
    not refused on the way (queued, sending, sent or delivered)."""
    return and_(SmsMessage.direction == SMS_OUT, SmsMessage.sent_by_id.is_not(None),
                SmsMessage.status.not_in((SMS_FAILED, SMS_UNDELIVERED)))


def answered_by_sms(session: Session, question_ids: Iterable[int]) -> set[int]:
    """Those of the questions a consultant has answered by SMS (is_sms_answer)."""
    wanted = sorted(set(question_ids))
    if not wanted:
        return set()
    return set(session.scalars(
        select(SmsMessage.question_id).where(
            SmsMessage.question_id.in_(wanted), is_sms_answer()).distinct()))
