"""Retention: the audio of closed questions is deleted, and callers' numbers are replaced by a
keyed pseudonym, after configurable numbers of days. Never commits.

Nothing here touches an open question: audio goes only when its question is closed and was
closed long enough ago; a caller's number goes only when none of their questions is open, every
one of them was closed long enough ago, and they have not called or written since. Both are
checked again when they are carried out (apply), which may be in a later transaction than the
plan's: hotline.cli_retention plans in a read-only transaction and applies in batches. The
pseudonym is an HMAC of the number (keyed with the app's secret), so the same number always
gets the same pseudonym: a caller's questions, calls and SMS stay linked to one caller, and a
resident who comes back later is joined to their earlier, pseudonymised record.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from sqlalchemy import Exists, and_, delete, exists, func, or_, select, update
from sqlalchemy.orm import InstrumentedAttribute, Session, sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from storage.audio_store import AudioStore, FolderAudioStore, UnsafeAudioKey, check_key
from storage.db import unit_of_work
from storage.models import (
    CHANNEL_SMS,
    DOWNLOAD_DELETED,
    QUESTION_CLOSED,
    SMS_IN,
    Call,
    CallbackAttempt,
    Caller,
    Note,
    Question,
    Recording,
    SmsMessage,
    Transcript,
)
from storage.phones import replace_phone_numbers
from storage.utc import ensure_utc

# Recording.download_state once retention removed the audio (never fetched again).
RECORDING_DELETED = DOWNLOAD_DELETED
# Pseudonyms fit Caller.phone (20 characters) and never look like a phone number.
PSEUDONYM_PREFIX = "anon-"
PSEUDONYM_LENGTH = 20


@dataclass(frozen=True)
class AudioDue:
    """A closed question's recording whose audio is to go."""

    recording_id: int
    question_id: int
    file_path: str | None


@dataclass(frozen=True)
class CallerDue:
    """A caller whose number is to be pseudonymised, and their (closed) questions."""

    caller_id: int
    question_ids: tuple[int, ...]


@dataclass
class Plan:
    """What retention removes now."""

    audio: list[AudioDue] = field(default_factory=list)
    callers: list[CallerDue] = field(default_factory=list)
    # Numbers kept on calls and SMS of no caller record (a From the hotline could not read as
    # a phone number), not heard from since callers_before: pseudonymised as callers' are.
    strays: list[str] = field(default_factory=list)
    # The limits the audio and the callers were found by; apply checks each against it again.
    audio_before: datetime | None = None
    callers_before: datetime | None = None


@dataclass
class Outcome:
    """What retention did: files removed, recordings marked, callers pseudonymised."""

    files_removed: int = 0
    recordings_deleted: int = 0
    callers_pseudonymised: int = 0
    callers_merged: int = 0
    strays_pseudonymised: int = 0
    skipped: list[str] = field(default_factory=list)


def pseudonym(phone: str, key: bytes) -> str:
    """Return the keyed pseudonym of a phone number (the same number, the same pseudonym)."""
    digest = hmac.new(key, b"caller-phone:" + phone.encode(), hashlib.sha256).digest()
    text = base64.b32encode(digest).decode().lower()
    return (PSEUDONYM_PREFIX + text)[:PSEUDONYM_LENGTH]


def is_pseudonym(phone: str | None) -> bool:
    """Tell whether a stored number has been pseudonymised already."""
    return bool(phone) and str(phone).startswith(PSEUDONYM_PREFIX)


def audio_due(session: Session, closed_before: datetime, *,
              recording_ids: Sequence[int] | None = None, lock: bool = False) -> list[AudioDue]:
    """Recordings of questions closed before closed_before whose audio is not deleted yet
    (only those of recording_ids, when given; lock: FOR UPDATE of the recordings on
    PostgreSQL, to change them in this transaction)."""
    statement = (
        select(Recording.id, Recording.question_id, Recording.file_path)
        .join(Question, Question.id == Recording.question_id)
        .where(Question.status == QUESTION_CLOSED, Question.closed_at.is_not(None),
               Question.closed_at < closed_before,
               Recording.download_state != RECORDING_DELETED)
        .order_by(Question.id)
    )
    if recording_ids is not None:
        statement = statement.where(Recording.id.in_(sorted(recording_ids)))
    if lock:
        statement = statement.with_for_update(of=Recording)
    return [AudioDue(recording_id=recording_id, question_id=question_id, file_path=path)
            for recording_id, question_id, path in session.execute(statement)]


def _unfinished(caller_id: InstrumentedAttribute[int] | int, before: datetime) -> Exists:
    """The caller has a question that is open, or was closed at or after before."""
    return exists().where(
        Question.caller_id == caller_id,
        or_(Question.status != QUESTION_CLOSED, Question.closed_at.is_(None),
            Question.closed_at >= before),
    )


def callers_due(session: Session, before: datetime) -> list[CallerDue]:
    """Callers to pseudonymise: not heard from since before, no question open or closed later."""
    callers = session.scalars(
        select(Caller.id)
        .where(~Caller.phone.startswith(PSEUDONYM_PREFIX, autoescape=True),
               Caller.last_seen < before, ~_unfinished(Caller.id, before))
        .order_by(Caller.id)).all()
    if not callers:
        return []
    questions: dict[int, list[int]] = {caller_id: [] for caller_id in callers}
    rows = session.execute(select(Question.caller_id, Question.id)
                           .where(Question.caller_id.in_(callers)).order_by(Question.id))
    for caller_id, question_id in rows:
        if caller_id is not None:
            questions[caller_id].append(question_id)
    return [CallerDue(caller_id, tuple(ids)) for caller_id, ids in questions.items()]


# A stored number with fewer digits is no person's ("anonymous", a short code, a sender's name).
STRAY_MIN_DIGITS = 7


def _open_question(question_id: InstrumentedAttribute[int | None], before: datetime) -> Exists:
    """The row's question is open, or was closed at or after before."""
    return exists().where(
        Question.id == question_id,
        or_(Question.status != QUESTION_CLOSED, Question.closed_at.is_(None),
            Question.closed_at >= before))


def strays_due(session: Session, before: datetime) -> list[str]:
    """Numbers on calls and SMS of no caller record to pseudonymise: none of their rows is from
    before's time on or belongs to a question still open (or closed since before)."""
    numbers = {*session.scalars(select(Call.from_number).distinct()
                                .where(Call.caller_id.is_(None))),
               *session.scalars(select(SmsMessage.phone).distinct()
                                .where(SmsMessage.caller_id.is_(None)))}
    due = []
    for number in sorted(numbers):
        if is_pseudonym(number) or sum(ch.isdigit() for ch in number) < STRAY_MIN_DIGITS:
            continue
        if not _stray_is_recent(session, number, before):
            due.append(number)
    return due


def _stray_is_recent(session: Session, number: str, before: datetime) -> bool:
    """Whether a row of no caller with this number is from before's time on, or has a
    question still open (or closed since before)."""
    call = select(Call.id).where(
        Call.caller_id.is_(None), Call.from_number == number,
        or_(Call.started_at >= before, exists().where(
            Question.call_id == Call.id,
            or_(Question.status != QUESTION_CLOSED, Question.closed_at.is_(None),
                Question.closed_at >= before)))).limit(1)
    sms = select(SmsMessage.id).where(
        SmsMessage.caller_id.is_(None), SmsMessage.phone == number,
        or_(SmsMessage.created_at >= before, SmsMessage.updated_at >= before,
            _open_question(SmsMessage.question_id, before))).limit(1)
    return (session.scalar(call) is not None) or (session.scalar(sms) is not None)


def plan(session: Session, now: datetime, audio_days: int, phone_days: int) -> Plan:
    """Work out what goes now; 0 days turns that part off."""
    result = Plan()
    if audio_days > 0:
        result.audio_before = now - timedelta(days=audio_days)
        result.audio = audio_due(session, result.audio_before)
    if phone_days > 0:
        result.callers_before = now - timedelta(days=phone_days)
        result.callers = callers_due(session, result.callers_before)
        result.strays = strays_due(session, result.callers_before)
    return result


def forget_audio(session: Session, item: AudioDue, audio: AudioStore, now: datetime,
                 outcome: Outcome, leftovers: Sequence[AudioStore] = ()) -> None:
    """Mark one recording's audio deleted, from the store and from each leftovers store (the
    other kind, which holds a copy after `hotline audio copy` switched the install over, kept
    as the source).

    A database store deletes the blob in session, so blob and row go together. A file is
    not deleted here: the row keeps its key (download_state deleted, file_path set: a file
    to remove) and remove_files deletes the file after the batch's commit, then clears the
    key. A batch that fails (a worker killed, the database gone) so leaves its rows and files
    as they were (before, its files were gone and its rows said stored); a file that cannot
    be deleted after the commit stays listed for the next run. A key leading out of the audio
    folder is noted in outcome.skipped, and the row stays as it was.
    """
    files = False
    if item.file_path:
        stores = (audio, *leftovers)
        try:
            # Every key checked first (UnsafeAudioKey: a key leading out of the folder), so
            # that no blob is deleted in this batch for a row left as it was.
            for store in stores:
                if isinstance(store, FolderAudioStore):
                    store.path(item.file_path)
                else:
                    check_key(item.file_path)
        except UnsafeAudioKey:
            outcome.skipped.append(f"question #{item.question_id} (recording "
                                   f"{item.recording_id}): path outside the audio folder")
            return
        for store in stores:
            if store.kind != "database":
                files = True
            elif store.delete(item.file_path, session=session):
                outcome.files_removed += 1
    session.execute(
        update(Recording)
        .where(Recording.id == item.recording_id)
        .values(file_path=item.file_path if files else None,
                download_state=RECORDING_DELETED, updated_at=now,
                last_error=f"audio deleted by retention on {now.date().isoformat()}")
        .execution_options(synchronize_session=False))
    outcome.recordings_deleted += 1


def files_to_remove(session: Session,
                    recording_ids: Sequence[int] | None = None) -> list[tuple[int, str]]:
    """Recordings marked deleted whose file is still to be removed (of recording_ids, when
    given): (id, key)."""
    query = (select(Recording.id, Recording.file_path)
             .where(Recording.download_state == RECORDING_DELETED,
                    Recording.file_path.is_not(None)))
    if recording_ids is not None:
        query = query.where(Recording.id.in_(list(recording_ids)))
    return [(row.id, str(row.file_path)) for row in session.execute(query.order_by(Recording.id))]


def remove_files(sessions: sessionmaker[Session], pending: Sequence[tuple[int, str]],
                 stores: Sequence[AudioStore], outcome: Outcome) -> None:
    """Delete the files of recordings marked deleted (forget_audio) from every store that
    keeps files, then clear the keys of those gone, in one short transaction; a file that
    cannot be deleted (a permission, a directory in its place) is noted in outcome.skipped
    and stays listed for the next run."""
    folders = [store for store in stores if store.kind != "database"]
    gone: list[int] = []
    for recording_id, key in pending:
        try:
            removed = [store.delete(key) for store in folders]
        except (OSError, UnsafeAudioKey) as error:
            outcome.skipped.append(f"recording {recording_id}: the audio file could not be "
                                   f"deleted ({type(error).__name__}); the next run tries "
                                   "again")
            continue
        if any(removed):
            outcome.files_removed += 1
        gone.append(recording_id)
    if gone:
        with unit_of_work(sessions) as session:
            session.execute(
                update(Recording)
                .where(Recording.id.in_(gone), Recording.download_state == RECORDING_DELETED)
                .values(file_path=None)
                .execution_options(synchronize_session=False))


def pseudonymise_caller(session: Session, caller_id: int, key: bytes, before: datetime,
                        outcome: Outcome) -> None:
    """Replace a caller's number with its pseudonym everywhere it is stored.

    The caller is due only if they still are now: the row is locked first (FOR UPDATE on
    PostgreSQL, where a call touching the caller then waits for this transaction; SQLite's
    BEGIN IMMEDIATE holds the whole database), then checked again, since a call or SMS may
    have come in after the plan was made: a caller heard from at or after before, or with a
    question open (or closed at or after before), keeps their number.

    If the pseudonym exists already (the resident came back after an earlier run), their new
    record is joined to the old one: questions, calls and SMS move over, the new row goes.
    """
    caller = session.scalars(
        select(Caller).where(Caller.id == caller_id).with_for_update()
        .execution_options(populate_existing=True)).one_or_none()
    if caller is None or is_pseudonym(caller.phone):
        return
    if ensure_utc(caller.last_seen) >= ensure_utc(before) or session.scalar(
            select(_unfinished(caller_id, before))):
        return
    old = caller.phone
    new = pseudonym(old, key)
    earlier = session.scalars(select(Caller).where(Caller.phone == new)).one_or_none()
    keep_id = caller.id
    if earlier is not None and earlier.id != caller.id:
        keep_id = earlier.id
        for table in (Question, Call, SmsMessage):
            session.execute(update(table).where(table.caller_id == caller.id)
                            .values(caller_id=earlier.id)
                            .execution_options(synchronize_session=False))
        earlier.first_seen = min(earlier.first_seen, caller.first_seen)
        earlier.last_seen = max(earlier.last_seen, caller.last_seen)
        if caller.sms_opted_out and not earlier.sms_opted_out:
            # The STOP came on the newer record: it moves over with its time.
            earlier.sms_opted_out, earlier.sms_opted_out_at = True, caller.sms_opted_out_at
        session.flush()
        session.expunge(caller)
        session.execute(delete(Caller).where(Caller.id == caller_id))
        outcome.callers_merged += 1
    else:
        caller.phone = new
    session.execute(update(Call)
                    .where(or_(Call.caller_id == keep_id,
                               and_(Call.caller_id.is_(None), Call.from_number == old)))
                    .values(from_number=new)
                    .execution_options(synchronize_session=False))
    session.execute(update(SmsMessage)
                    .where(or_(SmsMessage.caller_id == keep_id, SmsMessage.phone == old))
                    .values(phone=new)
                    .execution_options(synchronize_session=False))
    _scrub_error_texts(session, old, new,
                       or_(SmsMessage.caller_id == keep_id, SmsMessage.phone == new),
                       CallbackAttempt.question_id.in_(
                           select(Question.id).where(Question.caller_id == keep_id)))
    _scrub_written_numbers(session, keep_id, old, new, key)
    session.flush()
    outcome.callers_pseudonymised += 1


def rejoin_returning(session: Session, caller_id: int | None, key: bytes) -> bool:
    """A resident whose number was pseudonymised is back: their call or SMS made a new record
    with the number, and now a question of theirs is being stored. Their earlier record (the
    pseudonym's) joins this one at once, not at a later retention run: its questions, calls
    and SMS move here (the consultant sees the history; a repeat within 90 days counts), an
    opt-out (STOP) comes along, and the earlier row goes. Texts stay as retention left them.
    Return whether a record was joined."""
    if caller_id is None:
        return False
    caller = session.get(Caller, caller_id)
    if caller is None or is_pseudonym(caller.phone):
        return False
    earlier = session.scalars(
        select(Caller).where(Caller.phone == pseudonym(caller.phone, key))
        .with_for_update()).one_or_none()
    if earlier is None or earlier.id == caller.id:
        return False
    for table in (Question, Call, SmsMessage):
        session.execute(update(table).where(table.caller_id == earlier.id)
                        .values(caller_id=caller.id)
                        .execution_options(synchronize_session=False))
    caller.first_seen = min(ensure_utc(caller.first_seen), ensure_utc(earlier.first_seen))
    if earlier.sms_opted_out and not caller.sms_opted_out:
        caller.sms_opted_out, caller.sms_opted_out_at = True, earlier.sms_opted_out_at
    caller.language = caller.language or earlier.language
    session.flush()
    session.expunge(earlier)
    session.execute(delete(Caller).where(Caller.id == earlier.id))
    return True


def _scrub_written_numbers(session: Session, caller_id: int, old: str, new: str,
                           key: bytes) -> None:
    """Numbers written in texts of the caller's record, however spelled ("перезвоните на
    8 701 555 01 01"): in what the resident wrote (SMS they sent, an SMS question, their
    message kept for "0") every phone number goes to its pseudonym (a relative's number is
    theirs to keep private too); in what the hotline wrote (notes, a corrected transcript,
    a referral, SMS sent to them, an answer kept for MORE, a transcript) only the resident's
    own number does: an organisation's number in a referral stays."""
    def theirs(number: str) -> str:
        return pseudonym(number, key)

    def own(number: str) -> str | None:
        return new if number == old else None

    def scrub(text: str | None, replace: Callable[[str], str | None]) -> str | None:
        if not text or sum(ch.isdigit() for ch in text) < STRAY_MIN_DIGITS:
            return text  # nothing that could be a number: not parsed
        return replace_phone_numbers(text, replace)

    caller = session.get(Caller, caller_id)
    if caller is not None:
        caller.sms_answered_text = scrub(caller.sms_answered_text, theirs)
        caller.sms_more = scrub(caller.sms_more, own)
    for question in session.scalars(select(Question).where(Question.caller_id == caller_id)):
        question.text = scrub(question.text, theirs if question.channel == CHANNEL_SMS else own)
        question.corrected_text = scrub(question.corrected_text, own)
        question.referral = scrub(question.referral, own)
    of_caller = select(Question.id).where(Question.caller_id == caller_id)
    for note in session.scalars(select(Note).where(Note.question_id.in_(of_caller))):
        note.body = scrub(note.body, own) or note.body
    for transcript in session.scalars(
            select(Transcript).where(Transcript.question_id.in_(of_caller))):
        transcript.text = scrub(transcript.text, own) or transcript.text
    for message in session.scalars(select(SmsMessage).where(SmsMessage.caller_id == caller_id)):
        message.body = scrub(message.body, theirs if message.direction == SMS_IN else own) \
            or message.body


def _scrub_error_texts(session: Session, old: str, new: str, sms: ColumnElement[bool],
                       attempts: ColumnElement[bool]) -> None:
    """Replace the number in the error texts Twilio gave for these SMS and callback attempts
    ("The 'To' number +7701… is not a valid phone number"), kept as Twilio wrote them."""
    for spelling in dict.fromkeys((old, old.lstrip("+"))):
        if sum(ch.isdigit() for ch in spelling) < STRAY_MIN_DIGITS:
            continue
        session.execute(update(SmsMessage)
                        .where(sms, SmsMessage.error_message.contains(spelling, autoescape=True))
                        .values(error_message=func.replace(SmsMessage.error_message, spelling,
                                                           new))
                        .execution_options(synchronize_session=False))
        session.execute(update(CallbackAttempt)
                        .where(attempts, CallbackAttempt.error.contains(spelling,
                                                                        autoescape=True))
                        .values(error=func.replace(CallbackAttempt.error, spelling, new))
                        .execution_options(synchronize_session=False))


def pseudonymise_stray(session: Session, number: str, key: bytes, before: datetime,
                       outcome: Outcome) -> None:
    """Replace a number of no caller record (strays_due) with its pseudonym on its calls and
    SMS, unless a row of it is recent or has an open question now (checked again here)."""
    if is_pseudonym(number) or _stray_is_recent(session, number, before):
        return
    new = pseudonym(number, key)
    session.execute(update(Call)
                    .where(Call.caller_id.is_(None), Call.from_number == number)
                    .values(from_number=new)
                    .execution_options(synchronize_session=False))
    stray_sms = and_(SmsMessage.caller_id.is_(None), SmsMessage.phone == number)
    question_ids = session.scalars(select(SmsMessage.question_id).distinct().where(
        stray_sms, SmsMessage.question_id.is_not(None))).all()
    session.execute(update(SmsMessage).where(stray_sms).values(phone=new)
                    .execution_options(synchronize_session=False))
    _scrub_error_texts(session, number, new,
                       and_(SmsMessage.caller_id.is_(None), SmsMessage.phone == new),
                       CallbackAttempt.question_id.in_(question_ids))
    session.flush()
    outcome.strays_pseudonymised += 1


def batches(todo: Plan, size: int) -> Iterator[Plan]:
    """Split a plan into plans of at most size recordings or callers each (audio first), to
    be applied one transaction each: on SQLite a transaction that writes holds every other
    writer up (the webhooks among them) until it ends."""
    if size < 1:
        raise ValueError("a batch holds at least one item")
    for start in range(0, len(todo.audio), size):
        yield replace(todo, audio=todo.audio[start:start + size], callers=[], strays=[])
    for start in range(0, len(todo.callers), size):
        yield replace(todo, audio=[], callers=todo.callers[start:start + size], strays=[])
    for start in range(0, len(todo.strays), size):
        yield replace(todo, audio=[], callers=[], strays=todo.strays[start:start + size])


def apply(session: Session, todo: Plan, *, audio: AudioStore, key: bytes,
          now: datetime, outcome: Outcome | None = None,
          leftovers: Sequence[AudioStore] = ()) -> Outcome:
    """Carry out a plan (or one of its batches) and return the outcome (outcome, when given,
    adds this up with earlier batches): audio first (through the store, and the leftovers
    stores: forget_audio), then the rows.

    Each recording and each caller is checked again, as the plan may be older than this
    transaction: a recording whose question is no longer closed before the plan's limit, or
    whose audio is deleted already, is left alone, and its file path is read again (a
    download may have stored it since); callers as in pseudonymise_caller.
    """
    outcome = outcome if outcome is not None else Outcome()
    if todo.audio:
        if todo.audio_before is None:
            raise ValueError("a plan with audio needs audio_before")
        for item in audio_due(session, todo.audio_before,
                              recording_ids=[item.recording_id for item in todo.audio],
                              lock=True):
            forget_audio(session, item, audio, now, outcome, leftovers)
    if todo.callers:
        if todo.callers_before is None:
            raise ValueError("a plan with callers needs callers_before")
        for due in todo.callers:
            pseudonymise_caller(session, due.caller_id, key, todo.callers_before, outcome)
    if todo.strays:
        if todo.callers_before is None:
            raise ValueError("a plan with stray numbers needs callers_before")
        for number in todo.strays:
            pseudonymise_stray(session, number, key, todo.callers_before, outcome)
    return outcome


def twilio_copies_due(session: Session, limit: int) -> list[tuple[int, str]]:
    """(id, RecordingSid) of recordings whose audio retention deleted here and whose copy in
    the Twilio account is not deleted yet, oldest first, at most limit."""
    return [(row.id, row.recording_sid) for row in session.execute(
        select(Recording.id, Recording.recording_sid)
        .where(Recording.download_state == RECORDING_DELETED,
               Recording.twilio_deleted_at.is_(None))
        .order_by(Recording.id).limit(limit))]


def twilio_copy_deleted(session: Session, recording_id: int, now: datetime) -> None:
    """Note that the recording's copy at Twilio is gone (deleted now, or there was none)."""
    session.execute(update(Recording).where(Recording.id == recording_id)
                    .values(twilio_deleted_at=now)
                    .execution_options(synchronize_session=False))


def recording_sids(session: Session, recording_ids: Sequence[int]) -> list[str]:
    """The RecordingSids of these recordings."""
    if not recording_ids:
        return []
    return list(session.scalars(select(Recording.recording_sid)
                                .where(Recording.id.in_(sorted(recording_ids)))))
