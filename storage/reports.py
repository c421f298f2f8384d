"""Figures for coordinators and for the public page. Never commits.

Rows are chosen in SQL (dates, region, topic) and counted in Python: ISO weeks and months in
local time, working-day deadlines and percentiles come out the same on SQLite and PostgreSQL,
and the numbers are checked against a dataset with known answers in the tests.

Definitions (README, "Reports"):

- Test calls (closed as ``test_call``) are not residents' questions and count nowhere.
- A question is *answered* when a consultant first tried to call back (``first_callback_at``:
  the resident dialled, see storage.callbacks),
  answered it by SMS (storage.sms.is_sms_answer: the first such message's time), or closed it
  as resolved, whichever came first: the hotline promises an answer "by SMS or a call" within
  N working days.
- The *target*: answered before the end of the N-th working day (local time; Monday to Friday
  less public holidays, storage.workdays) after the day the question came in. The share answered
  within the target counts the questions that were answered, or whose deadline has passed
  unanswered; questions still inside their deadline, and questions closed without any answer
  (silence, wrong number, abusive), are left out of it.
- Percentiles interpolate linearly between the two nearest ranks (PostgreSQL's
  ``percentile_cont``, NumPy's default): the median of 1, 2, 3, 10 is 2.5.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, tzinfo
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, and_, exists, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage.audit import OUTCOME
from storage.callbacks import rang_resident_sql
from storage.models import (
    CALL_FINAL_STATUSES,
    CLOSE_RESOLVED,
    CLOSE_TEST_CALL,
    QUESTION_CLAIMED,
    QUESTION_CLOSED,
    ROLE_CONSULTANT,
    AuditEvent,
    Call,
    CallbackAttempt,
    PublicSnapshot,
    Question,
    SmsMessage,
    User,
)
from storage.sms import is_sms_answer
from storage.workdays import WorkCalendar

# A filter value meaning "not set" (a question without a region, or without a topic).
NOT_SET = "-"

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class Filters:
    """Which questions a report covers: arrival between since (inclusive) and until (exclusive),
    both UTC, and optionally one region and one topic (NOT_SET: those without one)."""

    since: datetime | None = None
    until: datetime | None = None
    region: str | None = None
    topic: str | None = None


@dataclass(frozen=True)
class QuestionFacts:
    """What the figures need of one question."""

    id: int
    created_at: datetime
    channel: str
    language: str | None
    topic: str | None
    region: str | None
    status: str
    closed_at: datetime | None
    close_reason: str | None
    first_callback_at: datetime | None
    first_sms_answer_at: datetime | None = None

    @property
    def answered_at(self) -> datetime | None:
        """When the question was answered: the first callback attempt, the first SMS answer,
        or a resolved close, whichever came first."""
        moments = [self.first_callback_at, self.first_sms_answer_at]
        if self.close_reason == CLOSE_RESOLVED:
            moments.append(self.closed_at)
        known = [m for m in moments if m is not None]
        return min(known) if known else None


@dataclass(frozen=True)
class Spread:
    """Median and 90th percentile of durations in hours, over n questions."""

    n: int
    median: float | None
    p90: float | None


@dataclass(frozen=True)
class Summary:
    """The headline figures of a set of questions."""

    questions: int
    answered: int
    # Questions whose target can be judged (answered, or past the deadline), and how many of
    # them were answered in time; share is within / due, None when nothing is due.
    due: int
    within_target: int
    to_callback: Spread
    to_resolution: Spread

    @property
    def share_within_target(self) -> float | None:
        """The share of due questions answered within the target, 0 to 1."""
        return self.within_target / self.due if self.due else None


@dataclass(frozen=True)
class ConsultantLoad:
    """One consultant's work: questions held now, callback attempts and closes in the range."""

    user_id: int
    name: str
    role: str
    claimed_now: int
    callback_attempts: int
    closed_resolved: int
    closed_other: int


# -- pure helpers ---------------------------------------------------------------------------

def percentile(values: Sequence[float], q: float) -> float | None:
    """Return the q-th quantile (0 to 1) of values, interpolating linearly; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    lower = int(position)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)


def spread(hours: Sequence[float]) -> Spread:
    """Median and 90th percentile of hours."""
    return Spread(n=len(hours), median=percentile(hours, 0.5), p90=percentile(hours, 0.9))


def hours_between(start: datetime, end: datetime) -> float:
    """Hours from start to end."""
    return (end - start).total_seconds() / 3600


def iso_week(moment: datetime, tz: tzinfo) -> str:
    """Name the local ISO week of moment, e.g. 2026-W09."""
    year, week, _day = moment.astimezone(tz).isocalendar()
    return f"{year}-W{week:02d}"


def week_start(label: str) -> date:
    """Return the Monday of an ISO week named by iso_week."""
    year, week = label.split("-W")
    return date.fromisocalendar(int(year), int(week), 1)


def month(moment: datetime, tz: tzinfo) -> str:
    """Name the local month of moment, e.g. 2026-03."""
    return moment.astimezone(tz).strftime("%Y-%m")


def count_by(facts: Iterable[QuestionFacts], key: Callable[[QuestionFacts], K]) -> Counter[K]:
    """Count questions by key."""
    return Counter(key(fact) for fact in facts)


def summarise(facts: Sequence[QuestionFacts], now: datetime, target_days: int,
              tz: tzinfo, calendar: WorkCalendar) -> Summary:
    """Compute the headline figures of facts as of now."""
    answered = due = within = 0
    to_callback: list[float] = []
    to_resolution: list[float] = []
    for fact in facts:
        answered_at = fact.answered_at
        deadline = calendar.deadline(fact.created_at, target_days, tz)
        if answered_at is not None:
            answered += 1
            due += 1
            within += answered_at < deadline
        elif fact.closed_at is None and deadline <= now:
            due += 1  # still open and late: a miss
        if fact.first_callback_at is not None:
            to_callback.append(hours_between(fact.created_at, fact.first_callback_at))
        if fact.close_reason == CLOSE_RESOLVED and fact.closed_at is not None:
            to_resolution.append(hours_between(fact.created_at, fact.closed_at))
    return Summary(questions=len(facts), answered=answered, due=due, within_target=within,
                   to_callback=spread(to_callback), to_resolution=spread(to_resolution))


# -- queries --------------------------------------------------------------------------------

def _not_a_test() -> ColumnElement[bool]:
    return or_(Question.close_reason.is_(None), Question.close_reason != CLOSE_TEST_CALL)


def _tag_filters(filters: Filters) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [_not_a_test()]
    for column, value in ((Question.region, filters.region), (Question.topic, filters.topic)):
        if value == NOT_SET:
            conditions.append(column.is_(None))
        elif value:
            conditions.append(column == value)
    return conditions


def _range(column: Any, filters: Filters) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if filters.since is not None:
        conditions.append(column >= filters.since)
    if filters.until is not None:
        conditions.append(column < filters.until)
    return conditions


def question_facts(session: Session, filters: Filters) -> list[QuestionFacts]:
    """Return the facts of the questions that arrived in the filters' range, oldest first."""
    # The first SMS answer of each question (few: only consultants write them; none is older
    # than its question, so none before the range).
    since = [SmsMessage.created_at >= filters.since] if filters.since is not None else []
    answers = (select(SmsMessage.question_id,
                      func.min(SmsMessage.created_at).label("first_sms_answer_at"))
               .where(SmsMessage.question_id.is_not(None), is_sms_answer(), *since)
               .group_by(SmsMessage.question_id).subquery())
    statement = (
        select(Question.id, Question.created_at, Question.channel, Question.language,
               Question.topic, Question.region, Question.status, Question.closed_at,
               Question.close_reason, Question.first_callback_at,
               answers.c.first_sms_answer_at)
        .outerjoin(answers, answers.c.question_id == Question.id)
        .where(*_tag_filters(filters), *_range(Question.created_at, filters))
        .order_by(Question.created_at, Question.id)
    )
    return [QuestionFacts(**row._asdict()) for row in session.execute(statement)]


def regions_and_topics(session: Session) -> tuple[list[str], list[str]]:
    """Return the regions and topics questions have been tagged with, for the filter form."""
    regions = session.scalars(select(Question.region).where(Question.region.is_not(None))
                              .distinct().order_by(Question.region))
    topics = session.scalars(select(Question.topic).where(Question.topic.is_not(None))
                             .distinct().order_by(Question.topic))
    return [r for r in regions if r], [t for t in topics if t]


def _callback_calls(session: Session, filters: Filters,
                    tags: list[ColumnElement[bool]]) -> Counter[int]:
    """Each consultant's calls to residents in the range (the load's "callback attempts"):
    the hotline's calls that rang the resident's phone (its resident leg was dialled), or
    that got an outcome written (the resident reached some other way); and outcomes written
    for a call made by other means (their own phone: the audit's outcome without an attempt),
    one per call (not again for a second question answered in it, "with_question").

    Not counted: a call Twilio refused, or one that only rang the consultant's own phone (they
    did not answer): no resident was called, as the reports' "answered" says too."""
    calls: Counter[int] = Counter()
    rang = or_(rang_resident_sql(), CallbackAttempt.outcome.is_not(None))
    for user_id, count in session.execute(
            select(CallbackAttempt.consultant_id, func.count())
            .join(Question, Question.id == CallbackAttempt.question_id)
            .where(rang, *tags, *_range(CallbackAttempt.created_at, filters))
            .group_by(CallbackAttempt.consultant_id)):
        calls[user_id] += count
    # Outcomes are few (one per conversation); their detail is JSON, read here rather than
    # in SQL that differs between SQLite and PostgreSQL.
    for user_id, detail in session.execute(
            select(AuditEvent.user_id, AuditEvent.detail)
            .join(Question, Question.id == AuditEvent.question_id)
            .where(AuditEvent.action == OUTCOME, AuditEvent.user_id.is_not(None), *tags,
                   *_range(AuditEvent.at, filters))):
        if detail.get("attempt_id") is None and detail.get("with_question") is None:
            calls[user_id] += 1
    return calls


def consultant_load(session: Session, filters: Filters) -> list[ConsultantLoad]:
    """Each consultant's load: held now (any date), attempts and closes in the range.

    Every active consultant is listed, and anyone else (a coordinator) who did some of it.
    """
    tags = _tag_filters(filters)
    claimed: dict[int | None, int] = {
        user_id: count for user_id, count in session.execute(
            select(Question.claimed_by_id, func.count())
            .where(Question.status == QUESTION_CLAIMED, *tags)
            .group_by(Question.claimed_by_id))}
    attempts = _callback_calls(session, filters, tags)
    resolved: Counter[int] = Counter()
    other: Counter[int] = Counter()
    closes = session.execute(
        select(Question.closed_by_id, Question.close_reason, func.count())
        .where(Question.status == QUESTION_CLOSED, Question.closed_by_id.is_not(None), *tags,
               *_range(Question.closed_at, filters))
        .group_by(Question.closed_by_id, Question.close_reason))
    for user_id, reason, count in closes:
        if user_id is None:
            continue
        (resolved if reason == CLOSE_RESOLVED else other)[user_id] += count
    involved = {u for u in (*claimed, *attempts, *resolved, *other) if u is not None}
    users = session.scalars(
        select(User).where(or_(and_(User.role == ROLE_CONSULTANT, User.active),
                               User.id.in_(involved or {-1})))
        .order_by(User.name, User.id))
    return [ConsultantLoad(user_id=u.id, name=u.name, role=u.role,
                           claimed_now=claimed.get(u.id, 0),
                           callback_attempts=attempts.get(u.id, 0),
                           closed_resolved=resolved[u.id], closed_other=other[u.id])
            for u in users]


def _first_key(digits: str | None) -> str:
    # The engine reads only the first key of what Gather collected.
    return (digits or "").strip()[:1]


def key_presses(session: Session, filters: Filters) -> Counter[tuple[str, str]]:
    """Count the keys pressed in each menu ("" for silence) on calls started in the range,
    but for calls that left a question closed as a test call (count nowhere)."""
    test_call = exists().where(Question.call_id == Call.id,
                               Question.close_reason == CLOSE_TEST_CALL)
    presses: Counter[tuple[str, str]] = Counter()
    for keys in session.scalars(select(Call.keys).where(~test_call,
                                                        *_range(Call.started_at, filters))):
        for entry in keys or []:
            presses[(str(entry.get("node", "")), _first_key(entry.get("digits")))] += 1
    return presses


def hangups(session: Session, filters: Filters) -> Counter[tuple[str | None, str | None]]:
    """Count where callers left without leaving a question: the last menu and key pressed.

    Ended calls started in the range, without a question; (None, None) when no key was pressed.
    """
    asked = exists().where(Question.call_id == Call.id)
    statement = select(Call.last_node, Call.keys).where(
        Call.status.in_(sorted(CALL_FINAL_STATUSES)), ~asked, *_range(Call.started_at, filters))
    where: Counter[tuple[str | None, str | None]] = Counter()
    for last_node, keys in session.execute(statement):
        if not keys:
            where[(last_node, None)] += 1
            continue
        last = keys[-1]
        where[(str(last.get("node", last_node)), _first_key(last.get("digits")))] += 1
    return where


def public_snapshot(session: Session, month: str) -> PublicSnapshot | None:
    """The public figures kept for the months up to month (YYYY-MM), if they were computed."""
    return session.get(PublicSnapshot, month)


def keep_public_snapshot(session: Session, month: str, computed_at: datetime,
                         document: dict[str, Any]) -> PublicSnapshot:
    """Keep the public figures for month, unless another process kept its own first; return
    the ones kept (theirs, then: every process serves the same)."""
    try:
        with session.begin_nested():
            session.add(PublicSnapshot(month=month, computed_at=computed_at, figures=document))
    except IntegrityError:
        pass  # another web process computed them at the same moment
    kept = session.get(PublicSnapshot, month, populate_existing=True)
    assert kept is not None
    return kept
