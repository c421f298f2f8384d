"""The callback queue: its order, its filters, its pages and its counts. Never commits.

Order. The queue is ordered by `Question.priority_at`: the arrival time, moved earlier for each
reason to hurry, as if the question had waited that much longer (URGENT_BOOST and the others
below). One indexed column, (status, priority_at, id), keeps the order cheap at 100,000
questions; it is recomputed whenever one of its reasons changes (reprioritise). Waiting time
needs no weight of its own: the longer a question waits, the further ahead it is.

A repeat caller is a resident (the same `Caller`, i.e. the same phone number) who asked another
question in the REPEAT_WINDOW (90 days) before this one: they called or wrote again, most often
because nobody has called them back yet. A new question of theirs is marked repeat_caller, and so
are their questions still open (note_new_question).

Statuses the queue shows (QueueFilter.status):
  due        waiting, and no retry is scheduled or its time has come (the default)
  scheduled  waiting for a retry after "no answer" (next_callback_at in the future)
  claimed    a consultant holds it
  open       everything not closed (due, scheduled and claimed)
  closed     closed; newest closing first

Counts (queue_counts) are GROUP BY queries over the open questions (a few thousand rows at
most, reached through the status indexes), never over the whole table; only the closed count
reads the closed rows, from an index.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, event, func, literal, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session, selectinload

from storage.models import (
    CHANNEL_VOICE,
    DOWNLOAD_STORED,
    MAX_ROW_ID,
    QUESTION_CLAIMED,
    QUESTION_CLOSED,
    QUESTION_WAITING,
    TRANSCRIPTION_DONE,
    TRANSCRIPTION_NO_MODEL,
    Question,
    Recording,
    Transcript,
    utcnow,
)

# How much earlier each reason puts a question, as if it had waited that much longer.
URGENT_BOOST = timedelta(days=7)
REPEAT_CALLER_BOOST = timedelta(days=1)
FAILED_ATTEMPT_BOOST = timedelta(hours=12)
# A caller's question is a repeat when they asked another one this long before it, or less.
REPEAT_WINDOW = timedelta(days=90)

# QueueFilter.status
STATUS_DUE = "due"
STATUS_SCHEDULED = "scheduled"
STATUS_CLAIMED = "claimed"
STATUS_OPEN = "open"
STATUS_CLOSED = "closed"
STATUSES = (STATUS_DUE, STATUS_SCHEDULED, STATUS_CLAIMED, STATUS_OPEN, STATUS_CLOSED)

# The filters besides the status, in the order the page shows them.
FACETS = ("language", "topic", "channel", "region")
# A facet filter's value that means "not set" (no language, no topic, no region).
UNSET = "-"

PAGE_SIZE = 50
_OPEN = (QUESTION_WAITING, QUESTION_CLAIMED)


def priority_at(created_at: datetime, *, urgent: bool, repeat_caller: bool,
                callback_attempts: int) -> datetime:
    """Return the moment the queue sorts a question by (earlier comes first)."""
    boost = FAILED_ATTEMPT_BOOST * callback_attempts
    if urgent:
        boost += URGENT_BOOST
    if repeat_caller:
        boost += REPEAT_CALLER_BOOST
    return created_at - boost


def reprioritise(question: Question) -> None:
    """Recompute the question's place in the queue after urgent, repeat or attempts changed."""
    question.priority_at = priority_at(
        question.created_at, urgent=bool(question.urgent),
        repeat_caller=bool(question.repeat_caller),
        callback_attempts=question.callback_attempts or 0)


@event.listens_for(Question, "before_insert")
def _place_in_queue(_mapper: Any, _connection: Any, question: Question) -> None:
    """Give a question inserted without a place in the queue the place its reasons give it.

    (The column's own default would be the moment of the INSERT, not the arrival time.)
    """
    if question.priority_at is None:
        if question.created_at is None:
            question.created_at = utcnow()
        reprioritise(question)


def note_new_question(session: Session, question: Question) -> None:
    """Mark a new question (and the caller's open ones) repeat_caller if the caller asked
    within REPEAT_WINDOW of it.

    Before it or after it: a question stored late with its own, older time (a recording the
    catch-up found at Twilio after the resident had asked again) is linked to the later one
    as the later one would have been linked to it. Called when a question is created
    (storage.questions, storage.sms); sets priority_at.
    """
    if question.caller_id is not None:
        others = list(session.scalars(
            select(Question)
            .where(Question.caller_id == question.caller_id,
                   Question.created_at >= question.created_at - REPEAT_WINDOW,
                   Question.created_at <= question.created_at + REPEAT_WINDOW,
                   Question.id != (question.id if question.id is not None else -1))
        ))
        if others:
            question.repeat_caller = True
        for other in others:
            if other.status != QUESTION_CLOSED and not other.repeat_caller:
                other.repeat_caller = True
                reprioritise(other)
    reprioritise(question)


# -- filters, pages and counts ----------------------------------------------------------------

@dataclass(frozen=True)
class QueueFilter:
    """What the queue shows. A facet of None is not filtered; UNSET matches questions without it."""

    status: str = STATUS_DUE
    language: str | None = None
    topic: str | None = None
    channel: str | None = None
    region: str | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown queue status {self.status!r}")

    def facet(self, name: str) -> str | None:
        """The filter's value for a facet (None: not filtered)."""
        value: str | None = getattr(self, name)
        return value


@dataclass(frozen=True)
class Cursor:
    """Where a page ends: the sort key of its last question (keyset paging)."""

    at: datetime | None
    id: int

    def encode(self) -> str:
        """Text for a URL: microseconds since 1970 (or "n" for none), a dot, the id."""
        if self.at is None:
            return f"n.{self.id}"
        delta = self.at - datetime(1970, 1, 1, tzinfo=UTC)
        micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
        return f"{micros}.{self.id}"

    @classmethod
    def decode(cls, text: str | None) -> Cursor | None:
        """Read an encoded cursor; None when text is missing or not one."""
        if not text:
            return None
        when, _, ident = text.partition(".")
        try:
            question_id = int(ident)
            at = (None if when == "n" else
                  datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(when)))
        except (ValueError, OverflowError):
            return None
        if not 0 < question_id <= MAX_ROW_ID:
            return None  # no question's id: the drivers refuse a larger one (a 500)
        return cls(at, question_id)


@dataclass(frozen=True)
class QueuePage:
    """One page of the queue, and where the next one starts (None: this is the last)."""

    questions: list[Question]
    next: Cursor | None


@dataclass(frozen=True)
class QueueCounts:
    """How many questions each status tab and each facet value would show.

    statuses: per status, with every facet filter applied. facets: per facet and value, the open
    questions with the other facets' filters applied (not the facet's own, so every choice shows
    what it would give).
    """

    statuses: dict[str, int]
    facets: dict[str, dict[str | None, int]] = field(default_factory=dict)


def _column(name: str) -> InstrumentedAttribute[Any]:
    column: InstrumentedAttribute[Any] = getattr(Question, name)
    return column


def _facet_conditions(filters: QueueFilter) -> list[ColumnElement[bool]]:
    conditions = []
    for name in FACETS:
        value = filters.facet(name)
        if value is None:
            continue
        column = _column(name)
        conditions.append(column.is_(None) if value == UNSET else column == value)
    return conditions


def _status_conditions(status: str, now: datetime) -> list[ColumnElement[bool]]:
    if status == STATUS_DUE:
        return [Question.status == QUESTION_WAITING,
                or_(Question.next_callback_at.is_(None), Question.next_callback_at <= now)]
    if status == STATUS_SCHEDULED:
        return [Question.status == QUESTION_WAITING, Question.next_callback_at > now]
    if status == STATUS_CLAIMED:
        return [Question.status == QUESTION_CLAIMED]
    if status == STATUS_OPEN:
        return [Question.status.in_(_OPEN)]
    return [Question.status == QUESTION_CLOSED]


def _select(filters: QueueFilter, now: datetime) -> Select[Question]:
    return (select(Question)
            .where(*_status_conditions(filters.status, now), *_facet_conditions(filters))
            .options(selectinload(Question.claimed_by)))


def queue_page(session: Session, filters: QueueFilter, now: datetime, *,
               after: Cursor | None = None, limit: int = PAGE_SIZE) -> QueuePage:
    """Return a page of the queue in its order, starting after the cursor (keyset paging).

    Open questions come in priority order (priority_at, then id); closed ones newest closing
    first (closed_at descending, then id descending; those without closed_at last, newest first).
    """
    if filters.status == STATUS_CLOSED:
        return _closed_page(session, filters, now, after, limit)
    statement = _select(filters, now)
    if after is not None and after.at is not None:
        # priority_at >= at first: the part of the key that an index range can use.
        statement = statement.where(
            Question.priority_at >= after.at,
            or_(Question.priority_at > after.at, Question.id > after.id))
    rows = list(session.scalars(
        statement.order_by(Question.priority_at, Question.id).limit(limit + 1)))
    return _page(rows, limit, lambda q: Cursor(q.priority_at, q.id))


def due_ids(session: Session, filters: QueueFilter, now: datetime, limit: int) -> list[int]:
    """The ids of the first questions of the filtered tab, in the queue's order."""
    return list(session.scalars(
        select(Question.id)
        .where(*_status_conditions(filters.status, now), *_facet_conditions(filters))
        .order_by(Question.priority_at, Question.id).limit(limit)))


def _closed_page(session: Session, filters: QueueFilter, now: datetime, after: Cursor | None,
                 limit: int) -> QueuePage:
    rows: list[Question] = []
    # Closed with a closing time: the (status, closed_at) index, read backwards. Written as two
    # queries because the backends put NULLs at opposite ends of a descending order.
    if after is None or after.at is not None:
        statement = _select(filters, now).where(Question.closed_at.is_not(None))
        if after is not None and after.at is not None:
            statement = statement.where(
                Question.closed_at <= after.at,
                or_(Question.closed_at < after.at, Question.id < after.id))
        rows = list(session.scalars(
            statement.order_by(Question.closed_at.desc(), Question.id.desc())
            .limit(limit + 1)))
    if len(rows) <= limit:
        # Closed without a closing time (closed before the workspace recorded it): newest first.
        statement = _select(filters, now).where(Question.closed_at.is_(None))
        if after is not None and after.at is None:
            statement = statement.where(Question.id < after.id)
        rows += session.scalars(
            statement.order_by(Question.id.desc()).limit(limit + 1 - len(rows)))
    return _page(rows, limit, lambda q: Cursor(q.closed_at, q.id))


def _page(rows: list[Question], limit: int, key: Any) -> QueuePage:
    if len(rows) > limit:
        rows = rows[:limit]
        return QueuePage(rows, key(rows[-1]))
    return QueuePage(rows, None)


# How much of each question's words the queue reads (it shows less: hotline.queue_page).
ASKED_CHARACTERS = 200


def asked(session: Session, questions: list[Question]) -> dict[int, str]:
    """The start of what each question says, for the queue's rows: the consultant's corrected
    transcript, else Vosk's, else the SMS text. One read of the transcripts, for the page's
    voice questions without a correction only, and at most ASKED_CHARACTERS of each."""
    found = {q.id: (q.corrected_text or q.text or "")[:ASKED_CHARACTERS] for q in questions}
    heard = [q.id for q in questions if q.channel == CHANNEL_VOICE and not q.corrected_text
             and q.transcription_state == TRANSCRIPTION_DONE]
    if heard:
        found.update((question_id, text) for question_id, text in session.execute(
            select(Transcript.question_id, func.substr(Transcript.text, 1, ASKED_CHARACTERS))
            .where(Transcript.question_id.in_(heard))))
    return {question_id: text for question_id, text in found.items() if text.strip()}


@dataclass(frozen=True)
class Unheard:
    """A recording whose words a lawyer may have to hear (no speech model transcribed it, or
    the transcription recognised none): its length in seconds (None when Twilio did not give
    it) and whether its audio is here to be listened to."""

    seconds: int | None
    stored: bool


def unheard(session: Session, questions: list[Question]) -> dict[int, Unheard]:
    """The recordings of the page's voice questions whose words a lawyer may have to hear: no
    speech model could transcribe them (TRANSCRIPTION_NO_MODEL), or the transcription found
    none (TRANSCRIPTION_DONE, as far as the page's caller knows); one read, of those only."""
    wanted = [q.id for q in questions if q.channel == CHANNEL_VOICE
              and q.transcription_state in (TRANSCRIPTION_NO_MODEL, TRANSCRIPTION_DONE)]
    if not wanted:
        return {}
    return {question_id: Unheard(seconds, state == DOWNLOAD_STORED and path is not None)
            for question_id, seconds, state, path in session.execute(
                select(Recording.question_id, Recording.duration, Recording.download_state,
                       Recording.file_path).where(Recording.question_id.in_(wanted)))}


def queue_counts(session: Session, filters: QueueFilter, now: datetime) -> QueueCounts:
    """Count the questions of each status tab and of each facet value (see QueueCounts)."""
    later = case((and_(Question.status == QUESTION_WAITING, Question.next_callback_at > now),
                  literal(1)), else_=literal(0))
    inner = (select(*(_column(name) for name in FACETS), Question.status,
                    later.label("later"))
             .where(Question.status.in_(_OPEN))
             .subquery())
    keys = [inner.c[name] for name in FACETS]
    groups = session.execute(
        select(*keys, inner.c.status, inner.c.later, func.count())
        .group_by(*keys, inner.c.status, inner.c.later)
    ).all()

    # Per group, the facets whose filter it fails: none, and it counts everywhere; one, and it
    # counts only in that facet's choices (whose own filter is left out); more, and nowhere.
    wanted = [filters.facet(name) for name in FACETS]
    statuses = dict.fromkeys(STATUSES, 0)
    facets: list[dict[str | None, int]] = [defaultdict(int) for _ in FACETS]
    for *values, status, later_flag, count in groups:
        failed = -1
        for index, chosen in enumerate(wanted):
            if chosen is None:
                continue
            value = values[index]
            if (value is not None) if chosen == UNSET else (value != chosen):
                if failed >= 0:
                    break
                failed = index
        else:
            if failed >= 0:
                facets[failed][values[failed]] += count
                continue
            tab = (STATUS_CLAIMED if status == QUESTION_CLAIMED
                   else STATUS_SCHEDULED if later_flag else STATUS_DUE)
            statuses[tab] += count
            statuses[STATUS_OPEN] += count
            for index, value in enumerate(values):
                facets[index][value] += count
    statuses[STATUS_CLOSED] = session.scalar(
        select(func.count()).select_from(Question)
        .where(Question.status == QUESTION_CLOSED, *_facet_conditions(filters))) or 0
    return QueueCounts(statuses, {name: dict(counted)
                                  for name, counted in zip(FACETS, facets, strict=True)})
