"""Transcription state of recorded questions, and their transcripts. Never commits."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage.models import (
    DOWNLOAD_STORED,
    TRANSCRIPTION_DONE,
    TRANSCRIPTION_PENDING,
    TRANSCRIPTION_RUNNING,
    Question,
    Recording,
    Transcript,
)

# Machines' clocks agree to within this (NTP): a retry that comes back at its retry_at by a
# worker whose clock is a little behind still claims its question.
CLOCK_SLACK = timedelta(seconds=5)


def claim_transcription(
    session: Session,
    question_id: int,
    now: datetime,
    *,
    stale_before: datetime,
    also: Iterable[str] = (),
) -> bool:
    """Mark the question running if it is pending (or running but stale); return whether won.

    One UPDATE with the condition in its WHERE clause: of two workers that try at once, exactly
    one changes the row. A running row older than stale_before belongs to a worker that died.
    A pending row waiting out its retry delay (transcription_updated_at in the future:
    retry_at) is not claimed before then by another job for it (a copy the sweep queued),
    which would spend the tries at once; `also` (an operator's command) claims it anyway.
    """
    ready = or_(Question.transcription_updated_at.is_(None),
                Question.transcription_updated_at <= now + CLOCK_SLACK)
    pending = (Question.transcription_state.in_((TRANSCRIPTION_PENDING, *also)) if also
               else and_(Question.transcription_state == TRANSCRIPTION_PENDING, ready))
    claimable = or_(
        pending,
        and_(
            Question.transcription_state == TRANSCRIPTION_RUNNING,
            or_(Question.transcription_updated_at.is_(None),
                Question.transcription_updated_at < stale_before),
        ),
    )
    result = session.execute(
        update(Question)
        .where(Question.id == question_id, claimable)
        .values(
            transcription_state=TRANSCRIPTION_RUNNING,
            transcription_attempts=Question.transcription_attempts + 1,
            transcription_updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0) == 1)


def set_transcription_state(
    session: Session, question_id: int, state: str, now: datetime, error: str | None = None,
    *, retry_at: datetime | None = None,
) -> None:
    """Record where the question's transcription stands, and why it stopped if it did;
    retry_at (a pending question after a passing failure): not to be tried before then, kept
    as its transcription_updated_at (claim_transcription)."""
    session.execute(
        update(Question)
        .where(Question.id == question_id)
        .values(transcription_state=state, transcription_error=error,
                transcription_updated_at=retry_at or now)
        .execution_options(synchronize_session=False)
    )


def mark_requeued(session: Session, question_ids: list[int], now: datetime) -> None:
    """Note that the sweep queued these pending questions' transcriptions again (as
    storage.questions.mark_requeued does for downloads): not again each minute while that job
    waits its turn. A stale running question is left as it is: its job claims it for being
    stale."""
    if question_ids:
        session.execute(
            update(Question)
            .where(Question.id.in_(question_ids),
                   Question.transcription_state == TRANSCRIPTION_PENDING)
            .values(transcription_updated_at=now)
            .execution_options(synchronize_session=False))


def save_transcript(
    session: Session,
    question_id: int,
    *,
    language: str,
    model: str,
    text: str,
    words: list[dict[str, Any]],
    confidence: float,
    duration: float,
    elapsed: float,
    now: datetime,
) -> bool:
    """Store the question's transcript once and mark it done; return whether it is new."""
    created = True
    try:
        with session.begin_nested():
            session.add(Transcript(
                question_id=question_id, language=language, model=model, text=text,
                words=words, confidence=confidence, duration=duration, elapsed=elapsed,
                created_at=now,
            ))
    except IntegrityError:
        # A job that ran twice (a retry after a lost acknowledgement): the first one won.
        created = False
    set_transcription_state(session, question_id, TRANSCRIPTION_DONE, now)
    return created


def get_transcript(session: Session, question_id: int) -> Transcript | None:
    """Return the question's transcript, or None."""
    return session.scalars(
        select(Transcript).where(Transcript.question_id == question_id)
    ).one_or_none()


def questions_to_transcribe(
    session: Session, states: Iterable[str], *, updated_before: datetime | None = None
) -> list[int]:
    """Return ids of questions in states whose audio is stored, oldest first.

    With updated_before, only those whose state has not moved since then (stuck or forgotten).
    """
    statement = (
        select(Question.id)
        .join(Recording, Recording.question_id == Question.id)
        .where(Question.transcription_state.in_(tuple(states)),
               Recording.download_state == DOWNLOAD_STORED)
        .order_by(Question.created_at, Question.id)
    )
    if updated_before is not None:
        statement = statement.where(or_(Question.transcription_updated_at.is_(None),
                                        Question.transcription_updated_at < updated_before))
    return list(session.scalars(statement))
