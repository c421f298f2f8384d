"""Recorded questions and their audio. Functions flush but never commit."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from storage.calls import answer_numbered_call, get_call
from storage.models import (
    CHANNEL_VOICE,
    DOWNLOAD_DELETED,
    DOWNLOAD_FAILED,
    DOWNLOAD_PENDING,
    DOWNLOAD_REFUSED,
    DOWNLOAD_STORED,
    QUESTION_WAITING,
    Question,
    Recording,
)
from storage.queue import note_new_question
from storage.retention import rejoin_returning


def _find_recording(session: Session, recording_sid: str) -> Recording | None:
    statement = (
        select(Recording)
        .where(Recording.recording_sid == recording_sid)
        .options(selectinload(Recording.question))
    )
    return session.scalars(statement).one_or_none()


def _fill_in(recording: Recording, recording_url: str, duration: int | None, now: datetime) -> None:
    changed = False
    if recording.duration is None and duration is not None:
        recording.duration = duration
        changed = True
    if not recording.source_url and recording_url:
        recording.source_url = recording_url
        changed = True
    if changed:
        recording.updated_at = now


def record_question(
    session: Session,
    *,
    recording_sid: str,
    call_sid: str,
    recording_url: str,
    duration: int | None,
    language: str | None,
    topic: str | None,
    now: datetime,
    phone: str | None = None,
    from_number: str = "",
    to_number: str = "",
    pseudonym_key: bytes | None = None,
) -> tuple[Question, Recording, bool]:
    """Queue a recorded voice question once per RecordingSid; return it and whether it is new.

    The question's caller is the call's. A call the database has no row for (its incoming
    webhook could not write one: the database was down then) is recorded now, with the
    caller's number phone (E.164, normalised by the caller of this function) and the
    request's from_number and to_number, so that the question is not left without a number
    to call back. With pseudonym_key, a resident whose number was pseudonymised is joined to
    their earlier record first (storage.retention.rejoin_returning).
    """
    recording = _find_recording(session, recording_sid)
    if recording is None:
        call = get_call(session, call_sid)
        if (call is None or call.caller_id is None) and phone is not None:
            answer_numbered_call(session, call_sid=call_sid, phone=phone,
                                 from_number=from_number, to_number=to_number, now=now)
            call = get_call(session, call_sid)
        question = Question(
            caller_id=call.caller_id if call else None,
            call_id=call.id if call else None,
            channel=CHANNEL_VOICE,
            language=language,
            topic=topic,
            status=QUESTION_WAITING,
            created_at=now,
        )
        candidate = Recording(
            recording_sid=recording_sid,
            question=question,
            call_sid=call_sid,
            duration=duration,
            source_url=recording_url,
            download_state=DOWNLOAD_PENDING,
            download_attempts=0,
            created_at=now,
            updated_at=now,
        )
        try:
            # Twilio may deliver the same recording to two requests at once; the unique
            # recording_sid lets exactly one insert win, and the savepoint lets the other go on.
            with session.begin_nested():
                session.add(question)
            if pseudonym_key is not None:
                rejoin_returning(session, question.caller_id, pseudonym_key)
            note_new_question(session, question)  # repeat caller? its place in the queue
            return question, candidate, True
        except IntegrityError:
            recording = _find_recording(session, recording_sid)
            if recording is None:
                raise
    _fill_in(recording, recording_url, duration, now)
    session.flush()
    return recording.question, recording, False


def known_recording_sids(session: Session, recording_sids: list[str]) -> set[str]:
    """Return which of these RecordingSids are stored already (in chunks: SQLite's limit on
    parameters)."""
    known: set[str] = set()
    for start in range(0, len(recording_sids), 500):
        chunk = recording_sids[start:start + 500]
        known.update(session.scalars(
            select(Recording.recording_sid).where(Recording.recording_sid.in_(chunk))))
    return known


def get_recording(session: Session, recording_id: int, *,
                  lock: bool = False) -> Recording | None:
    """Return the recording with this id, or None; lock: its row locked until the transaction
    ends, and read afresh (FOR UPDATE on PostgreSQL; SQLite's transactions are serial)."""
    if lock:
        return session.get(Recording, recording_id, with_for_update=True,
                           populate_existing=True)
    return session.get(Recording, recording_id)


def mark_requeued(session: Session, recording_ids: list[int], now: datetime) -> None:
    """Note that the sweep queued these recordings' downloads again (updated_at): the next
    sweeps leave them alone for the stale time, rather than queue one more job each minute
    while the first waits its turn (a media host down for an hour grew the queue without end,
    and every other caller's audio waited behind it)."""
    if recording_ids:
        session.execute(update(Recording).where(Recording.id.in_(recording_ids))
                        .values(updated_at=now).execution_options(synchronize_session=False))


def mark_recording_stored(
    session: Session, recording: Recording, file_path: str, now: datetime
) -> None:
    """Note that the recording's audio is saved at file_path (relative to the audio root)."""
    recording.file_path = file_path
    recording.download_state = DOWNLOAD_STORED
    recording.last_error = None
    recording.updated_at = now
    session.flush()


def mark_recording_failed(
    session: Session, recording: Recording, error: str, now: datetime, *, refused: bool = False
) -> None:
    """Note that downloading the recording failed, or was refused, and why; unless retention
    deleted its audio, which a failed try changes nothing of. (A failure after another job
    stored the audio is the caller's to tell: hotline.recordings.download_recording.)"""
    if recording.download_state == DOWNLOAD_DELETED:
        return
    recording.download_state = DOWNLOAD_REFUSED if refused else DOWNLOAD_FAILED
    recording.last_error = error
    recording.updated_at = now
    session.flush()


def count_download_attempt(session: Session, recording: Recording, now: datetime) -> None:
    """Count one more attempt to download the recording."""
    recording.download_attempts += 1
    recording.updated_at = now
    session.flush()


# Downloads of one recording the sweep starts at most; then it waits for an operator
# (`hotline recordings retry`), as a refused one does.
SWEEP_DOWNLOAD_ATTEMPTS = 20


def recordings_to_fetch(
    session: Session, updated_before: datetime | None = None,
    max_attempts: int = SWEEP_DOWNLOAD_ATTEMPTS,
) -> list[Recording]:
    """Return the recordings whose audio is not stored yet, oldest first.

    With updated_before (the sweep): only pending or failed ones untouched since then and tried
    fewer than max_attempts times; refused ones wait for an operator (`recordings retry`).
    """
    states = (DOWNLOAD_PENDING, DOWNLOAD_FAILED, DOWNLOAD_REFUSED)
    statement = select(Recording).order_by(Recording.created_at, Recording.id)
    if updated_before is None:
        return list(session.scalars(statement.where(Recording.download_state.in_(states))))
    statement = statement.where(
        Recording.download_state.in_((DOWNLOAD_PENDING, DOWNLOAD_FAILED)),
        Recording.updated_at < updated_before,
        Recording.download_attempts < max_attempts,
    )
    return list(session.scalars(statement))


def waiting_questions(session: Session, limit: int | None = None) -> list[Question]:
    """Return the questions waiting for a consultant, oldest first, with caller and recording."""
    statement = (
        select(Question)
        .where(Question.status == QUESTION_WAITING)
        .order_by(Question.created_at, Question.id)
        .options(selectinload(Question.caller), selectinload(Question.recording),
                 selectinload(Question.transcript))
        .limit(limit)
    )
    return list(session.scalars(statement))
