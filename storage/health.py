"""What the pipeline has waiting, and since when: the worker's heartbeat and the backlogs an
operator watches (hotline.health, `GET /health/ready`, `hotline health`).

Nothing here is about a person: counts and the oldest moment of each kind of waiting work.
The predicates are the sweep's own (storage.questions.recordings_to_fetch,
storage.transcripts.questions_to_transcribe, hotline.outbound_sms.messages_to_send), without
its "untouched for a while" condition: what waits, not what the sweep would send again now.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage.models import (
    DOWNLOAD_FAILED,
    DOWNLOAD_PENDING,
    DOWNLOAD_REFUSED,
    DOWNLOAD_STORED,
    QUESTION_CLOSED,
    SMS_OUT,
    SMS_QUEUED,
    SMS_SENDING,
    TRANSCRIPTION_NO_MODEL,
    TRANSCRIPTION_PENDING,
    TRANSCRIPTION_RUNNING,
    Heartbeat,
    Question,
    Recording,
    SmsMessage,
)
from storage.questions import SWEEP_DOWNLOAD_ATTEMPTS

# The heartbeat the worker's sweep writes each time it runs (every minute, and at start-up).
SWEEP = "sweep"
# The last backup that was made, and the last one that failed (hotline.backup.note_outcome).
BACKUP = "backup"
BACKUP_FAILED = "backup_failed"


@dataclass(frozen=True)
class Waiting:
    """How many of one kind of work wait, and since when the oldest does (None: none)."""

    count: int
    oldest: datetime | None


def beat(session: Session, name: str, now: datetime) -> None:
    """Write that the periodic job called name ran now (one row per name, kept)."""
    changed = session.execute(update(Heartbeat).where(Heartbeat.name == name)
                              .values(beat_at=now).execution_options(synchronize_session=False))
    if getattr(changed, "rowcount", 0) == 0:
        # The first beat ever. Two workers' first sweeps at once: the second one's savepoint
        # fails on the primary key, and it writes over the first one's row instead.
        try:
            with session.begin_nested():
                session.add(Heartbeat(name=name, beat_at=now))
        except IntegrityError:
            session.execute(update(Heartbeat).where(Heartbeat.name == name)
                            .values(beat_at=now).execution_options(synchronize_session=False))


def last_beat(session: Session, name: str) -> datetime | None:
    """When the periodic job called name last ran (None: never)."""
    return session.scalar(select(Heartbeat.beat_at).where(Heartbeat.name == name))


def _waiting(session: Session, since: Any, *where: Any) -> Waiting:
    count, oldest = session.execute(select(func.count(), func.min(since)).where(*where)).one()
    return Waiting(int(count or 0), oldest)


_GIVEN_UP = or_(
    Recording.download_state == DOWNLOAD_REFUSED,
    and_(Recording.download_state == DOWNLOAD_FAILED,
         Recording.download_attempts >= SWEEP_DOWNLOAD_ATTEMPTS))


def downloads_waiting(session: Session) -> Waiting:
    """Recordings whose audio is not here yet and that the sweep will fetch (pending, or failed
    with tries left), by when Twilio reported them."""
    return _waiting(session, Recording.created_at,
                    Recording.download_state.in_((DOWNLOAD_PENDING, DOWNLOAD_FAILED)),
                    ~_GIVEN_UP)


def downloads_given_up(session: Session, since: datetime | None = None) -> Waiting:
    """Recordings no job will fetch again (refused: a media host not allowed, a body too
    large; or failed SWEEP_DOWNLOAD_ATTEMPTS times): they wait for an operator (`hotline
    recordings retry`). With since: only those Twilio reported since then."""
    where = [_GIVEN_UP]
    if since is not None:
        where.append(Recording.created_at >= since)
    return _waiting(session, Recording.created_at, *where)


def transcriptions_waiting(session: Session) -> Waiting:
    """Questions whose audio is here and whose transcript is not yet, by when their audio was
    stored (the recording's last change)."""
    return _waiting(
        session, Recording.updated_at,
        Question.transcription_state.in_((TRANSCRIPTION_PENDING, TRANSCRIPTION_RUNNING)),
        Recording.question_id == Question.id, Recording.download_state == DOWNLOAD_STORED)


def waiting_for_a_model(session: Session) -> Waiting:
    """Open questions that no installed speech model could transcribe (no_model: none for
    their language), by when they came. No job tries them again: once a model is installed,
    `hotline transcribe --pending` does."""
    return _waiting(session, Question.created_at,
                    Question.transcription_state == TRANSCRIPTION_NO_MODEL,
                    Question.status != QUESTION_CLOSED)


def sms_waiting(session: Session) -> Waiting:
    """Outbound SMS not yet handed to Twilio (no MessageSid), by when they were queued."""
    return _waiting(session, SmsMessage.created_at,
                    SmsMessage.direction == SMS_OUT, SmsMessage.message_sid.is_(None),
                    or_(SmsMessage.status == SMS_QUEUED, SmsMessage.status == SMS_SENDING))


def first_question_at(session: Session) -> datetime | None:
    """When the first question still stored came (the lowest id: by the primary key's index,
    not a scan); None when there is none."""
    return session.scalar(select(Question.created_at).order_by(Question.id).limit(1))
