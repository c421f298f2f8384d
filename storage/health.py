"""What the pipeline has waiting, and since when: the worker's heartbeat and the backlogs an
operator watches (hotline.health, `GET /health/ready`, `hotline health`).

Nothing here is about a person: counts and the oldest moment of each kind of waiting work.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage.models import (
    DOWNLOAD_FAILED,
    DOWNLOAD_PENDING,
    DOWNLOAD_REFUSED,
    DOWNLOAD_STORED,
    SMS_OUT,
    SMS_QUEUED,
    SMS_SENDING,
    TRANSCRIPTION_PENDING,
    TRANSCRIPTION_RUNNING,
    Heartbeat,
    Question,
    Recording,
    SmsMessage,
)

# The heartbeat the worker's sweep writes each time it runs (every minute, and at start-up).
SWEEP = "sweep"


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
        # fails on the primary key, and the first one's row is the beat.
        try:
            with session.begin_nested():
                session.add(Heartbeat(name=name, beat_at=now))
        except IntegrityError:
            session.execute(update(Heartbeat).where(Heartbeat.name == name)
                            .values(beat_at=now).execution_options(synchronize_session=False))


def last_beat(session: Session, name: str) -> datetime | None:
    """When the periodic job called name last ran (None: never)."""
    return session.scalar(select(Heartbeat.beat_at).where(Heartbeat.name == name))


def _waiting(session: Session, count_of: Any, since: Any, *where: Any) -> Waiting:
    count, oldest = session.execute(
        select(func.count(count_of), func.min(since)).where(*where)).one()
    return Waiting(int(count or 0), oldest)


def downloads_waiting(session: Session) -> Waiting:
    """Recordings whose audio is not here yet and will be fetched (pending, or failed and to
    be tried again), by when Twilio reported them."""
    return _waiting(session, Recording.id, Recording.created_at,
                    Recording.download_state.in_((DOWNLOAD_PENDING, DOWNLOAD_FAILED)))


def downloads_refused(session: Session) -> Waiting:
    """Recordings refused (a media host not allowed, a body too large): they wait for an
    operator (`hotline recordings retry`), by when Twilio reported them."""
    return _waiting(session, Recording.id, Recording.created_at,
                    Recording.download_state == DOWNLOAD_REFUSED)


def transcriptions_waiting(session: Session) -> Waiting:
    """Questions whose audio is here and whose transcript is not yet, by when their
    transcription state last moved (their audio was stored, or a try began)."""
    moved = func.coalesce(Question.transcription_updated_at, Question.created_at)
    return _waiting(
        session, Question.id, moved,
        Question.transcription_state.in_((TRANSCRIPTION_PENDING, TRANSCRIPTION_RUNNING)),
        Question.recording.has(Recording.download_state == DOWNLOAD_STORED))


def sms_waiting(session: Session) -> Waiting:
    """Outbound SMS not yet handed to Twilio (no MessageSid), by when they were queued."""
    return _waiting(session, SmsMessage.id, SmsMessage.created_at,
                    SmsMessage.direction == SMS_OUT, SmsMessage.message_sid.is_(None),
                    or_(SmsMessage.status == SMS_QUEUED, SmsMessage.status == SMS_SENDING))
