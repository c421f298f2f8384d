"""A question's page: reading a question with its caller's history, and the changes a consultant
makes on it (corrected transcript, notes, tags, quick close). Never commits.

Every change writes its audit event (storage.audit) in the same session, so the caller's unit of
work commits both or neither. The events say which fields changed, never the resident's words or
phone number.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import exists, or_, select
from sqlalchemy.orm import Session, selectinload

from storage import audit
from storage.models import (
    QUESTION_CLOSED,
    QUICK_CLOSE_REASONS,
    AuditEvent,
    Call,
    Note,
    Question,
    SmsMessage,
)
from storage.queue import reprioritise

# How many of each kind of the caller's history the page shows (newest first).
HISTORY_LIMIT = 20
NOTE_MAX = 4000
# Forms are limited to 64 KiB (hotline.app); Cyrillic takes 6 bytes a letter URL-encoded.
CORRECTED_MAX = 8000
VILLAGE_MAX = 120

# Question.region: a stable code for each of Kazakhstan's 17 oblasts (regions) and the three
# cities of republican significance; names in three languages are in hotline.question_page.
REGION_CODES = (
    "astana", "almaty", "shymkent",
    "abai", "akmola", "aktobe", "almaty_region", "atyrau", "east_kazakhstan", "jambyl", "jetisu",
    "karaganda", "kostanay", "kyzylorda", "mangystau", "north_kazakhstan", "pavlodar",
    "turkistan", "ulytau", "west_kazakhstan",
)


class InvalidChange(ValueError):
    """A change the page's forms could not have sent (unknown topic, region or reason)."""


@dataclass(frozen=True)
class CallerHistory:
    """The caller's other questions, calls and SMS, newest first."""

    questions: list[Question]
    calls: list[Call]
    sms: list[SmsMessage]


def load_question(session: Session, question_id: int) -> Question | None:
    """Return the question with what its page shows (audio, transcript, caller, notes)."""
    statement = (
        select(Question)
        .where(Question.id == question_id)
        .options(
            selectinload(Question.recording),
            selectinload(Question.transcript),
            selectinload(Question.caller),
            selectinload(Question.claimed_by),
            selectinload(Question.closed_by),
            selectinload(Question.notes).selectinload(Note.author),
        )
    )
    return session.scalars(statement).one_or_none()


def caller_history(session: Session, question: Question,
                   limit: int = HISTORY_LIMIT) -> CallerHistory:
    """Return the caller's other questions, their calls and their SMS, newest first."""
    caller = question.caller
    if caller is None:
        return CallerHistory([], [], [])
    questions = session.scalars(
        select(Question)
        .where(Question.caller_id == caller.id, Question.id != question.id)
        .order_by(Question.created_at.desc(), Question.id.desc())
        .limit(limit)
    )
    calls = session.scalars(
        select(Call)
        .where(Call.caller_id == caller.id)
        .order_by(Call.started_at.desc(), Call.id.desc())
        .limit(limit)
    )
    # Messages are linked to the caller when known; older ones only carry the number.
    sms = session.scalars(
        select(SmsMessage)
        .where(or_(SmsMessage.caller_id == caller.id, SmsMessage.phone == caller.phone))
        .order_by(SmsMessage.created_at.desc(), SmsMessage.id.desc())
        .limit(limit)
    )
    return CallerHistory(list(questions), list(calls), list(sms))


def recorded_recently(session: Session, user_id: int, action: str, question_id: int,
                      now: datetime, window: timedelta) -> bool:
    """Tell whether the user has an event of this action on the question within window."""
    statement = select(exists().where(
        AuditEvent.question_id == question_id, AuditEvent.user_id == user_id,
        AuditEvent.action == action, AuditEvent.at >= now - window))
    return bool(session.scalar(statement))


# Opening a question or listening to it again within this time writes no new audit event.
AUDIT_REPEAT_WINDOW = timedelta(minutes=10)


def record_once(session: Session, user_id: int, action: str, question_id: int, now: datetime,
                window: timedelta = AUDIT_REPEAT_WINDOW, ip: str | None = None) -> bool:
    """Record opening or listening unless the user did the same within window; return whether."""
    if recorded_recently(session, user_id, action, question_id, now, window):
        return False
    audit.record(session, user_id, action, question_id, ip=ip, at=now)
    return True


def correct_transcript(session: Session, question: Question, text: str, user_id: int,
                       now: datetime, ip: str | None = None) -> bool:
    """Save the consultant's corrected version of the transcript; return whether it changed.

    An empty text removes the correction (the page then shows the machine's transcript again).
    """
    cleaned = text.replace("\r\n", "\n").strip()
    if len(cleaned) > CORRECTED_MAX:
        raise InvalidChange("corrected text too long")
    corrected = cleaned or None
    if corrected == question.corrected_text:
        return False
    question.corrected_text = corrected
    audit.record(session, user_id, audit.CHANGED, question.id, ip=ip, at=now,
                 fields=["corrected_text"], length=len(cleaned))
    return True


def add_note(session: Session, question: Question, body: str, user_id: int, now: datetime,
             ip: str | None = None) -> Note | None:
    """Add a note to the question; none when the body is empty."""
    cleaned = body.replace("\r\n", "\n").strip()
    if not cleaned:
        return None
    if len(cleaned) > NOTE_MAX:
        raise InvalidChange("note too long")
    note = Note(question_id=question.id, author_id=user_id, body=cleaned, created_at=now)
    session.add(note)
    session.flush()
    audit.record(session, user_id, audit.NOTED, question.id, ip=ip, at=now, note_id=note.id,
                 length=len(cleaned))
    return note


def set_tags(session: Session, question: Question, *, topic: str | None, region: str | None,
             village: str | None, urgent: bool, topics: tuple[str, ...], user_id: int,
             now: datetime, ip: str | None = None) -> list[str]:
    """Set the question's tags; return the names of the fields that changed.

    topics are the phone tree's topic ids (a question's topic must be one of them, or none).
    The event lists the changed fields with the new codes of topic, region and urgent; a
    village is a place a resident named, so only the fact that it changed is recorded.
    """
    topic = topic or None
    region = region or None
    village = " ".join((village or "").split()) or None
    if topic is not None and topic not in topics and topic != question.topic:
        raise InvalidChange(f"unknown topic {topic!r}")
    if region is not None and region not in REGION_CODES:
        raise InvalidChange(f"unknown region {region!r}")
    if village is not None and len(village) > VILLAGE_MAX:
        raise InvalidChange("village name too long")
    changes: dict[str, object] = {}
    if topic != question.topic:
        question.topic = topic
        changes["topic"] = topic
    if region != question.region:
        question.region = region
        changes["region"] = region
    if village != question.village:
        question.village = village
        changes["village"] = None
    if urgent != bool(question.urgent):
        question.urgent = urgent
        reprioritise(question)
        changes["urgent"] = urgent
    if changes:
        audit.record(session, user_id, audit.CHANGED, question.id, ip=ip, at=now,
                     fields=list(changes),
                     values={k: v for k, v in changes.items() if k != "village"})
    return list(changes)


def quick_close(session: Session, question: Question, reason: str, user_id: int, now: datetime,
                ip: str | None = None) -> None:
    """Close the question without a conversation (silence, wrong number, test call, abusive)."""
    if reason not in QUICK_CLOSE_REASONS:
        raise InvalidChange(f"not a quick-close reason: {reason!r}")
    question.status = QUESTION_CLOSED
    question.closed_at = now
    question.closed_by_id = user_id
    question.close_reason = reason
    question.claimed_by_id = None
    question.claimed_at = None
    question.claim_touched_at = None
    question.next_callback_at = None
    audit.record(session, user_id, audit.CLOSED, question.id, ip=ip, at=now, reason=reason)
