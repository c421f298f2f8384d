"""Database tables of the hotline, as SQLAlchemy 2.0 typed models."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    LargeBinary,
    MetaData,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from storage.utc import UTCDateTime

# The largest id of a row: the id columns are INTEGER, 32 bits on PostgreSQL (SQLite's are
# wider). A larger number from a URL is no such row, not a driver's overflow error.
MAX_ROW_ID = 2**31 - 1

# Recording.download_state
DOWNLOAD_PENDING = "pending"
DOWNLOAD_STORED = "stored"
DOWNLOAD_FAILED = "failed"
DOWNLOAD_REFUSED = "refused"
# Retention deleted the audio (storage.retention): never fetched again.
DOWNLOAD_DELETED = "deleted"
DOWNLOAD_STATES = (DOWNLOAD_PENDING, DOWNLOAD_STORED, DOWNLOAD_FAILED, DOWNLOAD_REFUSED)

# Question.status
QUESTION_WAITING = "waiting"
QUESTION_CLAIMED = "claimed"
QUESTION_CLOSED = "closed"
QUESTION_STATUSES = (QUESTION_WAITING, QUESTION_CLAIMED, QUESTION_CLOSED)

# Question.transcription_state
TRANSCRIPTION_PENDING = "pending"
TRANSCRIPTION_RUNNING = "running"
TRANSCRIPTION_DONE = "done"
TRANSCRIPTION_FAILED = "failed"
TRANSCRIPTION_NO_MODEL = "no_model"
TRANSCRIPTION_STATES = (TRANSCRIPTION_PENDING, TRANSCRIPTION_RUNNING, TRANSCRIPTION_DONE,
                        TRANSCRIPTION_FAILED, TRANSCRIPTION_NO_MODEL)

# SmsMessage.direction and status (outbound statuses are Twilio's MessageStatus values)
SMS_IN = "in"
SMS_OUT = "out"
SMS_RECEIVED = "received"
SMS_QUEUED = "queued"
# Our claim while a job talks to Twilio (a row without a MessageSid); once Twilio has the
# message, "sending" is Twilio's own status of the same name.
SMS_SENDING = "sending"
SMS_FAILED = "failed"
SMS_UNDELIVERED = "undelivered"
# Purposes of automatic SMS (SmsMessage.purpose).
SMS_RECEIPT = "receipt"
SMS_GAVE_UP = "gave_up"
SMS_FINAL_STATUSES = frozenset({"delivered", "undelivered", "failed", "read"})
# Twilio error: the recipient has replied STOP; sending to them is refused.
TWILIO_OPTED_OUT = 21610

# Question.close_reason: a consultant's outcome, or a quick close without a conversation.
CLOSE_RESOLVED = "resolved"
CLOSE_NO_ANSWER = "no_answer"  # the last callback attempt failed; the resident got an SMS
CLOSE_WRONG_NUMBER = "wrong_number"
CLOSE_SILENCE = "silence"
CLOSE_TEST_CALL = "test_call"
CLOSE_ABUSIVE = "abusive"
QUICK_CLOSE_REASONS = (CLOSE_SILENCE, CLOSE_WRONG_NUMBER, CLOSE_TEST_CALL, CLOSE_ABUSIVE)
CLOSE_REASONS = (CLOSE_RESOLVED, CLOSE_NO_ANSWER, CLOSE_WRONG_NUMBER, CLOSE_SILENCE,
                 CLOSE_TEST_CALL, CLOSE_ABUSIVE)

# CallbackAttempt.outcome (the consultant's form after a callback)
OUTCOME_RESOLVED = "resolved"
OUTCOME_FOLLOW_UP = "follow_up"
OUTCOME_NO_ANSWER = "no_answer"
OUTCOME_WRONG_NUMBER = "wrong_number"
OUTCOMES = (OUTCOME_RESOLVED, OUTCOME_FOLLOW_UP, OUTCOME_NO_ANSWER, OUTCOME_WRONG_NUMBER)

# Question.channel
CHANNEL_VOICE = "voice"
CHANNEL_SMS = "sms"

# Call.status: Twilio's CallStatus values; the final ones end the call.
CALL_IN_PROGRESS = "in-progress"
CALL_FINAL_STATUSES = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """Return the current time as an aware UTC datetime."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Declarative base: constraint names follow one convention so migrations can name them."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime}


class Caller(Base):
    """A resident, known by phone number, with the language they chose."""

    __tablename__ = "callers"

    id: Mapped[int] = mapped_column(primary_key=True)
    phone: Mapped[str] = mapped_column(String(20), unique=True)
    language: Mapped[str | None] = mapped_column(String(8))
    first_seen: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(default=utcnow)
    # SMS: opted out (STOP) until they send START; the last topic answered (for "0" = ask a
    # lawyer about it) and the rest of a long answer (for MORE).
    sms_opted_out: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    sms_opted_out_at: Mapped[datetime | None]
    sms_topic: Mapped[str | None] = mapped_column(String(64))
    sms_more: Mapped[str | None] = mapped_column(Text)
    # They replied 0 / QUESTION: their next free text goes to a lawyer as it is.
    sms_awaiting_question: Mapped[bool] = mapped_column(Boolean, default=False,
                                                        server_default="0")
    # Their own message that the last topic answer replied to: 0 passes it to a lawyer
    # (flows.sms.SmsState.answered_text), if 0 is their next message and within a day
    # (hotline.sms._answered_text).
    sms_answered_text: Mapped[str | None] = mapped_column(Text)

    questions: Mapped[list[Question]] = relationship(back_populates="caller")

    def __repr__(self) -> str:
        return f"<Caller {self.id} {self.phone}>"


class Call(Base):
    """One phone call to the hotline, with the keys pressed on the way."""

    __tablename__ = "calls"

    id: Mapped[int] = mapped_column(primary_key=True)
    call_sid: Mapped[str] = mapped_column(String(64), unique=True)
    caller_id: Mapped[int | None] = mapped_column(ForeignKey("callers.id"), index=True)
    from_number: Mapped[str] = mapped_column(String(255), default="")
    to_number: Mapped[str] = mapped_column(String(255), default="")
    status: Mapped[str] = mapped_column(String(20), default=CALL_IN_PROGRESS)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None]
    duration: Mapped[int | None]
    # [{"node": str, "digits": str, "at": ISO 8601 UTC}], oldest first.
    keys: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    last_node: Mapped[str | None] = mapped_column(String(64))

    caller: Mapped[Caller | None] = relationship()

    def __repr__(self) -> str:
        return f"<Call {self.id} {self.call_sid} {self.status}>"


class Question(Base):
    """A resident's question waiting for a consultant's callback."""

    __tablename__ = "questions"
    __table_args__ = (
        Index("ix_questions_status_created_at", "status", "created_at"),
        Index("ix_questions_transcription", "transcription_state", "transcription_updated_at"),
        Index("ix_questions_status_claim_touched_at", "status", "claim_touched_at"),
        # The queue: open questions in priority order, and its filters (storage.queue).
        Index("ix_questions_status_priority_at", "status", "priority_at", "id"),
        # A filter's value, then the closed tab's order (migration 0007 added closed_at).
        Index("ix_questions_language_status_closed_at", "language", "status", "closed_at"),
        Index("ix_questions_topic_status_closed_at", "topic", "status", "closed_at"),
        Index("ix_questions_region_status_closed_at", "region", "status", "closed_at"),
        Index("ix_questions_channel_status_closed_at", "channel", "status", "closed_at"),
        Index("ix_questions_status_closed_at", "status", "closed_at"),
        # Every column the queue's counts read (migration 0007).
        Index("ix_questions_queue_counts", "status", "language", "topic", "region", "channel",
              "next_callback_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    caller_id: Mapped[int | None] = mapped_column(ForeignKey("callers.id"), index=True)
    # Indexed: the reports ask, of every call, whether it left a question (migration 0013).
    call_id: Mapped[int | None] = mapped_column(ForeignKey("calls.id"), index=True)
    channel: Mapped[str] = mapped_column(String(10))
    language: Mapped[str | None] = mapped_column(String(8))
    topic: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(20), default=QUESTION_WAITING)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # What the resident wrote, for SMS questions.
    text: Mapped[str | None] = mapped_column(Text)
    # The database, not the job queue, knows where transcription stands (DESIGN.md, Jobs).
    transcription_state: Mapped[str] = mapped_column(
        String(12), default=TRANSCRIPTION_PENDING, server_default=TRANSCRIPTION_PENDING)
    transcription_attempts: Mapped[int] = mapped_column(default=0, server_default="0")
    transcription_error: Mapped[str | None] = mapped_column(Text)
    transcription_updated_at: Mapped[datetime | None]
    # The consultant working on it (status "claimed"); the claim lapses when left untouched.
    claimed_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    claimed_at: Mapped[datetime | None]
    claim_touched_at: Mapped[datetime | None]
    # Priority (storage.queue): the queue is ordered by priority_at, the arrival time moved
    # earlier for each reason to hurry (urgent, repeat caller, failed callback attempts).
    urgent: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    repeat_caller: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    priority_at: Mapped[datetime | None] = mapped_column(default=utcnow)
    # Calling back: attempts made, and when the next may be made (a retry after no answer).
    callback_attempts: Mapped[int] = mapped_column(default=0, server_default="0")
    next_callback_at: Mapped[datetime | None]
    first_callback_at: Mapped[datetime | None]
    # Tags a consultant sets on the question's page (topic is above).
    region: Mapped[str | None] = mapped_column(String(64))
    village: Mapped[str | None] = mapped_column(String(120))
    # The consultant's corrected version of the transcript.
    corrected_text: Mapped[str | None] = mapped_column(Text)
    # An organisation the resident was referred to (outcome "needs follow-up").
    referral: Mapped[str | None] = mapped_column(Text)
    closed_at: Mapped[datetime | None]
    closed_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    close_reason: Mapped[str | None] = mapped_column(String(20))

    caller: Mapped[Caller | None] = relationship(back_populates="questions")
    claimed_by: Mapped[User | None] = relationship(foreign_keys=[claimed_by_id])
    closed_by: Mapped[User | None] = relationship(foreign_keys=[closed_by_id])
    notes: Mapped[list[Note]] = relationship(back_populates="question",
                                             order_by="Note.created_at")
    call: Mapped[Call | None] = relationship()
    recording: Mapped[Recording | None] = relationship(back_populates="question", uselist=False)
    transcript: Mapped[Transcript | None] = relationship(back_populates="question",
                                                         uselist=False)

    def __repr__(self) -> str:
        return f"<Question {self.id} {self.channel} {self.status}>"


class Recording(Base):
    """The audio of a voice question: where Twilio keeps it and whether we have a copy."""

    __tablename__ = "recordings"

    id: Mapped[int] = mapped_column(primary_key=True)
    recording_sid: Mapped[str] = mapped_column(String(64), unique=True)
    question_id: Mapped[int] = mapped_column(ForeignKey("questions.id"), unique=True)
    call_sid: Mapped[str] = mapped_column(String(64))
    duration: Mapped[int | None]
    source_url: Mapped[str] = mapped_column(Text)
    # Relative to the audio root, so the root can move.
    file_path: Mapped[str | None] = mapped_column(String(255))
    download_state: Mapped[str] = mapped_column(String(12), default=DOWNLOAD_PENDING)
    download_attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    # When Twilio's own copy was deleted (after retention deleted ours; storage.retention).
    twilio_deleted_at: Mapped[datetime | None]

    question: Mapped[Question] = relationship(back_populates="recording")

    def __repr__(self) -> str:
        return f"<Recording {self.id} {self.recording_sid} {self.download_state}>"


class Transcript(Base):
    """What Vosk heard in a recorded question, word by word (one per question)."""

    __tablename__ = "transcripts"

    id: Mapped[int] = mapped_column(primary_key=True)
    question_id: Mapped[int] = mapped_column(ForeignKey("questions.id"), unique=True)
    language: Mapped[str] = mapped_column(String(8))
    model: Mapped[str] = mapped_column(String(128))
    text: Mapped[str] = mapped_column(Text)
    # [{"word": str, "start": float, "end": float, "conf": float}]
    words: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    confidence: Mapped[float] = mapped_column(Float)
    duration: Mapped[float] = mapped_column(Float)
    elapsed: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    question: Mapped[Question] = relationship(back_populates="transcript")

    def __repr__(self) -> str:
        return f"<Transcript {self.id} of question {self.question_id}>"


class SmsMessage(Base):
    """One SMS to or from a resident, with its delivery status."""

    __tablename__ = "sms_messages"
    __table_args__ = (Index("ix_sms_messages_phone_direction_created_at", "phone", "direction",
                            "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    # Twilio's MessageSid: known at once for inbound, after sending for outbound.
    message_sid: Mapped[str | None] = mapped_column(String(64), unique=True)
    direction: Mapped[str] = mapped_column(String(3))
    caller_id: Mapped[int | None] = mapped_column(ForeignKey("callers.id"), index=True)
    phone: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)
    language: Mapped[str | None] = mapped_column(String(8))
    question_id: Mapped[int | None] = mapped_column(ForeignKey("questions.id"), index=True)
    status: Mapped[str] = mapped_column(String(20))
    error_code: Mapped[int | None]
    error_message: Mapped[str | None] = mapped_column(Text)
    encoding: Mapped[str | None] = mapped_column(String(8))
    segments: Mapped[int | None]
    # The consultant who wrote it (an answer from a question's page); None for automatic ones.
    sent_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    # Why an automatic one was sent: SMS_RECEIPT (a recorded question is saved) or SMS_GAVE_UP
    # (the last callback attempt failed); None for replies and consultants' answers.
    purpose: Mapped[str | None] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    # An outbound message Twilio has not reported final news of: when the sweep asks Twilio
    # about it next (hotline.outbound_sms.reconcile_statuses; None: not to be asked), and how
    # many times it has asked.
    status_check_at: Mapped[datetime | None] = mapped_column(index=True)
    status_checks: Mapped[int] = mapped_column(default=0, server_default="0")

    caller: Mapped[Caller | None] = relationship()

    def __repr__(self) -> str:
        return f"<SmsMessage {self.id} {self.direction} {self.status}>"


# User.role: consultants work the queue; coordinators also manage accounts and content.
ROLE_CONSULTANT = "consultant"
ROLE_COORDINATOR = "coordinator"
ROLES = (ROLE_CONSULTANT, ROLE_COORDINATOR)


class User(Base):
    """A consultant or coordinator who logs in to the workspace."""

    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint("role IN ('consultant', 'coordinator')", name="role"),
        # Lower-cased on the way in (storage.users); the check keeps "unique" meaning unique.
        CheckConstraint("email = lower(email)", name="email_lower"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str] = mapped_column(String(120))
    role: Mapped[str] = mapped_column(String(20))
    # Argon2id, in its own self-describing string format (parameters and salt included).
    password_hash: Mapped[str] = mapped_column(String(255))
    # E.164; the phone the hotline rings when this consultant calls a resident back.
    phone: Mapped[str | None] = mapped_column(String(20))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_login_at: Mapped[datetime | None]
    # Sessions opened before this are over (set when the account is closed or its password
    # changed); the session's stamp (hotline.auth).
    sessions_from: Mapped[datetime | None]

    def __repr__(self) -> str:
        return f"<User {self.id} {self.email} {self.role}>"


class LoginAttempt(Base):
    """A failed login, kept a day: the rate limit counts them per email and per address."""

    __tablename__ = "login_attempts"
    __table_args__ = (
        Index("ix_login_attempts_email_attempted_at", "email", "attempted_at"),
        Index("ix_login_attempts_ip_attempted_at", "ip", "attempted_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254))
    ip: Mapped[str] = mapped_column(String(45))
    attempted_at: Mapped[datetime] = mapped_column(default=utcnow)

    def __repr__(self) -> str:
        return f"<LoginAttempt {self.id} {self.email} {self.ip}>"


class Note(Base):
    """A consultant's note on a question."""

    __tablename__ = "notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    question_id: Mapped[int] = mapped_column(ForeignKey("questions.id"), index=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    question: Mapped[Question] = relationship(back_populates="notes")
    author: Mapped[User] = relationship()

    def __repr__(self) -> str:
        return f"<Note {self.id} on question {self.question_id}>"


# CallbackAttempt.state: where the bridge stands (the legs' own statuses are Twilio's).
CALLBACK_DIALING = "dialing"  # Twilio is ringing the consultant's phone
CALLBACK_BRIDGING = "bridging"  # the consultant answered; Twilio is ringing the resident
CALLBACK_CONNECTED = "connected"  # the resident answered
CALLBACK_ENDED = "ended"  # the call is over; the outcome form waits
CALLBACK_FAILED = "failed"  # Twilio refused or could not place the call


class CallbackAttempt(Base):
    """One try at calling a resident back through the consultant's phone."""

    __tablename__ = "callback_attempts"
    __table_args__ = (Index("ix_callback_attempts_question_id_created_at", "question_id",
                            "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    question_id: Mapped[int] = mapped_column(ForeignKey("questions.id"))
    consultant_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    state: Mapped[str] = mapped_column(String(12), default=CALLBACK_DIALING)
    # The call to the consultant (created through the REST API) and the dialled resident leg.
    consultant_call_sid: Mapped[str | None] = mapped_column(String(64), unique=True)
    consultant_status: Mapped[str | None] = mapped_column(String(20))
    resident_call_sid: Mapped[str | None] = mapped_column(String(64))
    resident_status: Mapped[str | None] = mapped_column(String(20))
    duration: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[str | None] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None]

    consultant: Mapped[User] = relationship()

    def __repr__(self) -> str:
        return f"<CallbackAttempt {self.id} of question {self.question_id} {self.state}>"


class AuditEvent(Base):
    """Who did what to which question, and when (storage.audit); coordinators read it."""

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_question_id_at", "question_id", "at"),
        Index("ix_audit_events_user_id_at", "user_id", "at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    action: Mapped[str] = mapped_column(String(32))
    question_id: Mapped[int | None] = mapped_column(ForeignKey("questions.id"))
    # What changed, in a few words or fields (never a full phone number).
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    ip: Mapped[str | None] = mapped_column(String(45))

    user: Mapped[User | None] = relationship()

    def __repr__(self) -> str:
        return f"<AuditEvent {self.id} {self.action} question {self.question_id}>"


class AudioBlob(Base):
    """A recording's audio kept in the database (storage.audio_store.DatabaseAudioStore).

    key is the recording's Recording.file_path; data the WAV bytes (BLOB on SQLite, bytea on
    PostgreSQL). Used when HOTLINE_AUDIO_STORE=database, so that web and worker processes on
    different machines share the audio through the database they share already.
    """

    __tablename__ = "audio_blobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(255), unique=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    size: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    def __repr__(self) -> str:
        return f"<AudioBlob {self.id} {self.key} {self.size} bytes>"


class PublicSnapshot(Base):
    """The public figures as published for the months up to `month` (YYYY-MM, Almaty): computed
    once, by the first visitor after that month ended, and served unchanged until the next
    month ends (hotline.public_stats). A tag changed, or a question found, later does not
    change them: two versions of the figures never differ by one call."""

    __tablename__ = "public_snapshots"

    month: Mapped[str] = mapped_column(String(7), primary_key=True)
    computed_at: Mapped[datetime]
    figures: Mapped[dict[str, Any]] = mapped_column(JSON)

    def __repr__(self) -> str:
        return f"<PublicSnapshot {self.month}>"


class Heartbeat(Base):
    """When a periodic job last ran (storage.health.beat): the worker's sign of life.

    One row per name; the sweep writes "sweep" every minute, and /health/ready reads it.
    """

    __tablename__ = "heartbeats"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    beat_at: Mapped[datetime]

    def __repr__(self) -> str:
        return f"<Heartbeat {self.name} {self.beat_at:%Y-%m-%d %H:%M:%S}>"
