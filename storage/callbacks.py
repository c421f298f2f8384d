"""Calling residents back: attempts and their calls' statuses, outcomes, retries. Never commits.

A callback attempt is one call that Twilio places to the consultant's own phone and, once they
answer, bridges to the resident (hotline.callbacks). Twilio reports each leg's CallStatus in
callbacks that may come late, twice, or out of order: a leg's status only ever moves forward
(queued < initiated < ringing < in-progress < a final status), and the attempt's state is
derived from the two legs, so the same callbacks in any order end in the same state.

After the call the consultant records an outcome (apply_outcome). "No answer" counts a failed
attempt and plans the next one: after a delay (HOTLINE_CALLBACK_RETRY_MINUTES), moved into the
daytime window (HOTLINE_CALLBACK_HOURS, Almaty), see next_callback_time. The last allowed
failed attempt closes the question; the caller of apply_outcome then sends the resident an SMS.

A question with a live attempt is not idle: its claim does not lapse (storage.claims), however
long the conversation. Releasing or closing the question ends its live attempts
(end_live_attempts), so the resident is not dialled for a question its consultant gave up.

first_callback_at (the reports' "answered") is the first time the resident was called: when
the consultant answered and the hotline dialled the resident (resident_dialled), or when an
outcome was recorded for a call made by other means (apply_outcome). A call Twilio refused
does not count, nor one that only rang the consultant's own phone (they did not answer, or
their voicemail did): the resident was not called.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo

from sqlalchemy import ColumnElement, and_, exists, func, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session, aliased, selectinload

from storage import audit
from storage.audit import OUTCOME as OUTCOME_EVENT
from storage.models import (
    CALL_FINAL_STATUSES,
    CALLBACK_BRIDGING,
    CALLBACK_CONNECTED,
    CALLBACK_DIALING,
    CALLBACK_ENDED,
    CALLBACK_FAILED,
    CLOSE_NO_ANSWER,
    CLOSE_RESOLVED,
    CLOSE_WRONG_NUMBER,
    OUTCOME_FOLLOW_UP,
    OUTCOME_NO_ANSWER,
    OUTCOME_RESOLVED,
    OUTCOME_WRONG_NUMBER,
    OUTCOMES,
    QUESTION_CLOSED,
    QUESTION_WAITING,
    SMS_FAILED,
    SMS_GAVE_UP,
    SMS_OUT,
    SMS_UNDELIVERED,
    AuditEvent,
    CallbackAttempt,
    Question,
    SmsMessage,
)
from storage.queue import reprioritise
from storage.sms import is_sms_answer
from storage.utc import ensure_utc

LIVE_STATES = (CALLBACK_DIALING, CALLBACK_BRIDGING, CALLBACK_CONNECTED)
# A live attempt with no news from Twilio for this long is taken as over (its callbacks were
# lost, or never sent: no public URL). Ringing never lasts minutes; a call lasts at most
# 4 hours (Twilio's default time limit).
RINGING_STALE = timedelta(minutes=10)
CONNECTED_STALE = timedelta(hours=4)

# Twilio's CallStatus values in the order they happen; every final status ranks last.
_CALL_RANK = {"queued": 0, "initiated": 1, "ringing": 2, "in-progress": 3}
_FINAL_RANK = 4
# The resident leg answered (a Dial action's DialCallStatus "answered" means the same).
ANSWERED = frozenset({"in-progress", "completed"})
CONSULTANT_LEG = "consultant"
RESIDENT_LEG = "resident"
# CallbackAttempt.error of our own (other errors are Twilio's messages, kept as they are).
ERROR_NO_NEWS = "no news from Twilio about this call"
ERROR_CONSULTANT_FAILED = "Twilio could not call your phone"
ERROR_WITHDRAWN = "the question was released or closed during the call"


def call_rank(status: str | None) -> int:
    """Where a CallStatus stands (-1: none yet)."""
    if status is None:
        return -1
    if status in CALL_FINAL_STATUSES:
        return _FINAL_RANK
    return _CALL_RANK.get(status, 1)


# -- when to try again ------------------------------------------------------------------------

def next_callback_time(failed_at: datetime, delay: timedelta, hours: tuple[int, int],
                       zone: tzinfo) -> datetime:
    """The first moment at or after failed_at + delay within the daily window, as UTC.

    hours is (start, end) in local hours of zone: calls from start:00 up to, not including,
    end:00 (end 24 is midnight). A moment before the window moves to its start that day; a
    moment at or after its end moves to its start the next day. After a delay of a day or
    more, "the next day" is that whole day: due from its window's start, whenever in the day
    the failure was (one at 19:55 would otherwise be due at 19:55, five minutes before the
    calls stop, and in practice called the morning after; one saved at 20:05 is due the next
    morning, not the morning after).
    """
    start, end = hours
    if not 0 <= start < end <= 24:
        raise ValueError(f"not a daytime window: {hours!r}")
    moment = ensure_utc(failed_at + delay).astimezone(zone)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    opens, closes = day + timedelta(hours=start), day + timedelta(hours=end)
    if moment < opens or delay >= timedelta(days=1):
        moment = opens
    elif moment >= closes:
        moment = opens + timedelta(days=1)
    return ensure_utc(moment)


def within_hours(moment: datetime, hours: tuple[int, int], zone: tzinfo) -> bool:
    """Whether moment falls in the daily window hours (as in next_callback_time) of zone."""
    start, end = hours
    return start <= ensure_utc(moment).astimezone(zone).hour < end


def retry_delay(failed_attempts: int, delays: tuple[timedelta, ...]) -> timedelta:
    """The wait after the failed_attempts-th failure (1 is the first); the last delay repeats."""
    if not delays:
        raise ValueError("no retry delays")
    return delays[min(max(failed_attempts, 1), len(delays)) - 1]


@dataclass(frozen=True)
class RetryPolicy:
    """How callbacks are retried (from the settings)."""

    hours: tuple[int, int]
    delays: tuple[timedelta, ...]
    max_attempts: int
    zone: tzinfo


# -- attempts ---------------------------------------------------------------------------------

def attempts_of(session: Session, question_id: int) -> list[CallbackAttempt]:
    """The question's callback attempts, newest first."""
    return list(session.scalars(
        select(CallbackAttempt).where(CallbackAttempt.question_id == question_id)
        .order_by(CallbackAttempt.created_at.desc(), CallbackAttempt.id.desc())
    ))


def lock_attempts(session: Session, question_ids: Iterable[int]) -> None:
    """Lock the questions' callback attempts (in id order) before the questions themselves: the
    order of Twilio's status callbacks, which lock an attempt and then its question, so an
    outcome written while a status arrives waits instead of deadlocking with it."""
    session.execute(select(CallbackAttempt.id)
                    .where(CallbackAttempt.question_id.in_(list(question_ids)))
                    .order_by(CallbackAttempt.id).with_for_update())


def talks_without_outcome(session: Session,
                          question_ids: Iterable[int]) -> dict[int, CallbackAttempt]:
    """For each of these questions whose newest attempt reached the resident (a talk of some
    seconds) but has no outcome, and no outcome was recorded for the question after it (by
    someone who called by other means: the audit log's "outcome"), that attempt, with its
    consultant: a conversation whose result nobody wrote down (the claim lapsed or was
    released), for the next consultant to know."""
    wanted = sorted(set(question_ids))
    if not wanted:
        return {}
    newest: dict[int, CallbackAttempt] = {}
    for attempt in session.scalars(
            select(CallbackAttempt).where(CallbackAttempt.question_id.in_(wanted))
            .options(selectinload(CallbackAttempt.consultant))
            .order_by(CallbackAttempt.created_at, CallbackAttempt.id)):
        newest[attempt.question_id] = attempt
    talks = {question_id: attempt for question_id, attempt in newest.items()
             if attempt.duration and attempt.outcome is None}
    if not talks:
        return {}
    outcomes: dict[int | None, datetime] = {
        question_id: at for question_id, at in session.execute(
            select(AuditEvent.question_id, func.max(AuditEvent.at))
            .where(AuditEvent.question_id.in_(sorted(talks)),
                   AuditEvent.action == OUTCOME_EVENT)
            .group_by(AuditEvent.question_id))}
    return {question_id: attempt for question_id, attempt in talks.items()
            if question_id not in outcomes
            or ensure_utc(outcomes[question_id]) < ensure_utc(attempt.created_at)}


def is_live(attempt: CallbackAttempt, now: datetime) -> bool:
    """Whether the attempt's call is still going on (and Twilio has not gone quiet on it)."""
    if attempt.state not in LIVE_STATES:
        return False
    quiet_for = ensure_utc(now) - ensure_utc(attempt.updated_at)
    limit = CONNECTED_STALE if attempt.state == CALLBACK_CONNECTED else RINGING_STALE
    return quiet_for < limit


def has_live_attempt(now: datetime,
                     question_id: ColumnElement[int] | InstrumentedAttribute[int] = Question.id,
                     ) -> ColumnElement[bool]:
    """SQL about the Question in the statement (or the one question_id names, an alias's id):
    an attempt of its call is going on (is_live)."""
    ringing = and_(CallbackAttempt.state.in_((CALLBACK_DIALING, CALLBACK_BRIDGING)),
                   CallbackAttempt.updated_at > now - RINGING_STALE)
    connected = and_(CallbackAttempt.state == CALLBACK_CONNECTED,
                     CallbackAttempt.updated_at > now - CONNECTED_STALE)
    return exists().where(CallbackAttempt.question_id == question_id, or_(ringing, connected))


def live_attempt(session: Session, question_id: int, now: datetime) -> CallbackAttempt | None:
    """The question's attempt whose call is going on, if any."""
    for attempt in attempts_of(session, question_id):
        if is_live(attempt, now):
            return attempt
    return None


def start_attempt(session: Session, question: Question, consultant_id: int,
                  now: datetime) -> CallbackAttempt:
    """Add an attempt about to dial the consultant; end attempts that went quiet.

    The caller has checked that none is live (holding the question's row lock: touch_claim).
    """
    for earlier in attempts_of(session, question.id):
        if earlier.state in LIVE_STATES:
            earlier.state = CALLBACK_ENDED
            earlier.error = earlier.error or ERROR_NO_NEWS
            earlier.ended_at = now
            earlier.updated_at = now
    attempt = CallbackAttempt(question_id=question.id, consultant_id=consultant_id,
                              state=CALLBACK_DIALING, created_at=now, updated_at=now)
    session.add(attempt)
    session.flush()
    return attempt


def dialled(session: Session, attempt: CallbackAttempt, call_sid: str, status: str | None,
            now: datetime) -> None:
    """Store the CallSid (and first status) Twilio gave when it accepted the call to the
    consultant's phone (not yet a callback: resident_dialled)."""
    attempt.consultant_call_sid = call_sid
    if status and call_rank(status) > call_rank(attempt.consultant_status):
        attempt.consultant_status = status
    attempt.updated_at = now
    _derive_state(attempt, now)


def fail_attempt(attempt: CallbackAttempt, error: str, now: datetime) -> None:
    """Twilio refused to place the call (or could not be reached)."""
    attempt.state = CALLBACK_FAILED
    attempt.error = error[:2000]
    attempt.ended_at = attempt.ended_at or now
    attempt.updated_at = now


def end_attempt(attempt: CallbackAttempt, error: str | None, now: datetime) -> None:
    """End the attempt now (the call is over for us, whatever Twilio reports later)."""
    attempt.state = CALLBACK_ENDED
    attempt.error = attempt.error or error
    attempt.ended_at = attempt.ended_at or now
    attempt.updated_at = now


def end_live_attempts(session: Session, question_id: int, now: datetime) -> list[int]:
    """End the question's live attempts (it was released or closed); return their ids.

    The answer webhook then hangs up instead of dialling the resident. A conversation already
    going on is not cut by this (Twilio's call goes on until either side hangs up).
    """
    ended = []
    for attempt in attempts_of(session, question_id):
        if is_live(attempt, now):
            end_attempt(attempt, ERROR_WITHDRAWN, now)
            ended.append(attempt.id)
    return ended


def resident_dialled(question: Question, now: datetime) -> None:
    """The hotline dials the resident (the consultant answered): the question's first
    callback is now, if it had none."""
    if question.first_callback_at is None:
        question.first_callback_at = now


def record_leg_status(attempt: CallbackAttempt, leg: str, status: str, now: datetime, *,
                      call_sid: str | None = None, duration: int | None = None,
                      error: str | None = None) -> bool:
    """Apply a status of one leg (only forward); return whether anything changed."""
    if leg == CONSULTANT_LEG:
        current = attempt.consultant_status
    elif leg == RESIDENT_LEG:
        current = attempt.resident_status
    else:
        raise ValueError(f"unknown leg {leg!r}")
    changed = False
    if call_rank(status) > call_rank(current):
        if leg == CONSULTANT_LEG:
            attempt.consultant_status = status
        else:
            attempt.resident_status = status
        changed = True
    if leg == RESIDENT_LEG and call_sid and attempt.resident_call_sid is None:
        attempt.resident_call_sid = call_sid
        changed = True
    if leg == RESIDENT_LEG and duration is not None and attempt.duration is None \
            and status in CALL_FINAL_STATUSES:
        attempt.duration = duration
        changed = True
    if error and attempt.error is None:
        attempt.error = error[:2000]
        changed = True
    if changed:
        attempt.updated_at = now
        _derive_state(attempt, now)
    return changed


def _derive_state(attempt: CallbackAttempt, now: datetime) -> None:
    """Set the attempt's state from its legs' statuses; ended and failed stay as they are."""
    if attempt.state in (CALLBACK_ENDED, CALLBACK_FAILED):
        return
    consultant, resident = attempt.consultant_status, attempt.resident_status
    if consultant == "failed" and resident is None:
        state = CALLBACK_FAILED  # Twilio could not call the consultant's phone
        attempt.error = attempt.error or ERROR_CONSULTANT_FAILED
    elif call_rank(consultant) == _FINAL_RANK or call_rank(resident) == _FINAL_RANK:
        state = CALLBACK_ENDED
    elif resident in ANSWERED:
        state = CALLBACK_CONNECTED
    elif consultant in ANSWERED:
        state = CALLBACK_BRIDGING
    else:
        state = CALLBACK_DIALING
    attempt.state = state
    if state in (CALLBACK_ENDED, CALLBACK_FAILED):
        attempt.ended_at = attempt.ended_at or now


def own_open_attempt(session: Session, question_id: int,
                     user_id: int) -> CallbackAttempt | None:
    """The question's newest attempt if it is the user's and its outcome is not written yet
    (the call the outcome form is about); else None."""
    newest = next(iter(attempts_of(session, question_id)), None)
    if newest is None or newest.consultant_id != user_id or newest.outcome is not None:
        return None
    return newest


def rang_resident(attempt: CallbackAttempt | None) -> bool:
    """Whether the attempt (own_open_attempt's) rang the resident: its resident leg was
    dialled (a status of that leg came: initiated, ringing, busy, no-answer...). Not when
    Twilio could not place the call, the consultant's own phone did not answer, or a machine
    took it: the resident's phone never rang."""
    return attempt is not None and (attempt.resident_status is not None
                                    or attempt.resident_call_sid is not None)


def rang_resident_sql() -> ColumnElement[bool]:
    """rang_resident as SQL, about the CallbackAttempt in the statement (the reports count
    each consultant's calls by it); keep the two alike."""
    return or_(CallbackAttempt.resident_status.is_not(None),
               CallbackAttempt.resident_call_sid.is_not(None))


def resident_answered(attempt: CallbackAttempt) -> bool:
    """Whether the resident picked up during the attempt."""
    return attempt.resident_status in ANSWERED


# -- outcomes ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class OutcomeResult:
    """What an outcome did to the question."""

    outcome: str
    closed: bool
    close_reason: str | None
    failed_attempts: int
    next_callback_at: datetime | None
    # The last allowed attempt failed: the resident is to be told by SMS how to reach us.
    gave_up: bool
    attempt_id: int | None


def close_question(question: Question, user_id: int | None, reason: str, now: datetime) -> None:
    """Close the question for a reason; it leaves the queue and nobody holds it."""
    question.status = QUESTION_CLOSED
    question.closed_at = now
    question.closed_by_id = user_id
    question.close_reason = reason
    question.next_callback_at = None
    question.claimed_by_id = None
    question.claimed_at = None
    question.claim_touched_at = None


def reopen_unanswered(session: Session, message: SmsMessage, now: datetime) -> int | None:
    """A consultant's SMS answer that did not reach the resident (failed, undelivered: Twilio
    refused it, gave up delivering it, or it was never sent), on a question closed as resolved
    that the resident got no other answer to: the question goes back to the queue, for a
    lawyer to call or write again; return its id (None: nothing to do).

    No other answer: no call of the hotline's that the resident answered, and no other SMS
    answer on its way or delivered. "The system" writes REOPENED (sms_id) to the audit log.
    Questions closed otherwise (a wrong number, a test call, no answer after the last try)
    stay closed: the SMS was not their answer.
    """
    if (message.direction != SMS_OUT or message.sent_by_id is None
            or message.question_id is None
            or message.status not in (SMS_FAILED, SMS_UNDELIVERED)):
        return None
    question = session.get(Question, message.question_id, with_for_update=True)
    if (question is None or question.status != QUESTION_CLOSED
            or question.close_reason != CLOSE_RESOLVED):
        return None
    if _answered(session, question.id):
        return None
    question.status = QUESTION_WAITING
    question.closed_at = None
    question.closed_by_id = None
    question.close_reason = None
    reprioritise(question)
    audit.record(session, None, audit.REOPENED, question.id, at=now, sms_id=message.id)
    return question.id


def gave_up_sms_owed(session: Session, closing: Question) -> Question | None:
    """The resident's question whose "we tried to call you" SMS was held back because another
    of their questions was still to be called, now that closing (that other question, open
    when the SMS was held back) closes and none stays open, nobody having reached them since:
    their newest question closed as no answer after the last try, no such SMS to them since it
    closed, no question of theirs resolved since, no hotline call of theirs answered since.
    None when nothing is owed (or something is still open). A question asked after the SMS
    was held back owes nothing: its own outcome tells the resident. The caller of this has
    locked the resident's row first (storage.claims.lock_resident_of), as the outcome form
    does: a last failed try and this close at the same moment take turns, and the second sees
    the first's change (each would otherwise see the other question open, and neither send)."""
    caller_id = closing.caller_id
    if caller_id is None:
        return None
    if session.scalar(select(Question.id).where(
            Question.caller_id == caller_id, Question.status != QUESTION_CLOSED).limit(1)):
        return None
    gave_up = session.scalars(
        select(Question).where(Question.caller_id == caller_id,
                               Question.close_reason == CLOSE_NO_ANSWER,
                               Question.closed_at.is_not(None))
        .order_by(Question.closed_at.desc(), Question.id.desc()).limit(1)).first()
    if (gave_up is None or gave_up.closed_at is None
            or ensure_utc(closing.created_at) > ensure_utc(gave_up.closed_at)):
        return None
    since = gave_up.closed_at
    told = exists().where(SmsMessage.caller_id == caller_id, SmsMessage.purpose == SMS_GAVE_UP,
                          or_(SmsMessage.question_id == gave_up.id,
                              SmsMessage.created_at >= since))
    resolved = exists().where(Question.caller_id == caller_id,
                              Question.close_reason == CLOSE_RESOLVED, Question.closed_at > since)
    talked = exists().where(CallbackAttempt.question_id == Question.id,
                            Question.caller_id == caller_id, reached_resident(),
                            CallbackAttempt.created_at > since)
    if session.scalar(select(or_(told, resolved, talked))):
        return None
    return gave_up


def reached_resident() -> ColumnElement[bool]:
    """A hotline call that reached the resident: their leg answered, and the consultant did
    not write it, or a later call on the question, as no answer or a wrong number (an
    answering machine picks up too: its greeting is no conversation; the lawyer who heard it
    hangs up, often calls again, and writes "no answer" on the last call only)."""
    later = aliased(CallbackAttempt)
    not_reached = (OUTCOME_NO_ANSWER, OUTCOME_WRONG_NUMBER)
    return and_(CallbackAttempt.resident_status.in_(sorted(ANSWERED)),
                or_(CallbackAttempt.outcome.is_(None),
                    CallbackAttempt.outcome.not_in(not_reached)),
                ~exists().where(later.question_id == CallbackAttempt.question_id,
                                later.created_at > CallbackAttempt.created_at,
                                later.outcome.in_(not_reached)))


def _answered(session: Session, question_id: int) -> bool:
    """Whether the resident got an answer to the question: a call of the hotline's that
    reached them (reached_resident), or an SMS answer on its way or delivered
    (is_sms_answer)."""
    talked = exists().where(CallbackAttempt.question_id == question_id, reached_resident())
    written = exists().where(SmsMessage.question_id == question_id, is_sms_answer())
    return bool(session.scalar(select(or_(talked, written))))


def failed_sms_answer(session: Session, question_id: int) -> SmsMessage | None:
    """The consultant's SMS answer to the question that did not reach the resident (failed or
    undelivered), when they got no other answer (_answered): the newest such; else None.
    Resolving the question on it would close it with nothing said (reopen_unanswered does
    the same for a refusal that arrives after the outcome)."""
    failed = session.scalars(
        select(SmsMessage).where(SmsMessage.question_id == question_id,
                                 SmsMessage.direction == SMS_OUT,
                                 SmsMessage.sent_by_id.is_not(None),
                                 SmsMessage.status.in_((SMS_FAILED, SMS_UNDELIVERED)))
        .order_by(SmsMessage.id.desc()).limit(1)).first()
    if failed is None or _answered(session, question_id):
        return None
    return failed


def release(question: Question) -> None:
    """Put the question back in the queue for whoever comes next."""
    question.status = QUESTION_WAITING
    question.claimed_by_id = None
    question.claimed_at = None
    question.claim_touched_at = None


def apply_outcome(session: Session, question: Question, user_id: int, outcome: str,
                  referral: str | None, now: datetime, policy: RetryPolicy) -> OutcomeResult:
    """Record the consultant's outcome (the caller holds the question).

    resolved, wrong number: closed. Follow-up: the referral is kept and the question goes back
    to the queue. No answer: one more failed attempt (the queue moves it up), the next try is
    planned and the question goes back to the queue, or, at the last allowed attempt, it is
    closed (gave_up: the resident gets an SMS).
    """
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown outcome {outcome!r}")
    # The outcome belongs to the question's newest attempt if this user made it and it has
    # none yet; otherwise they called by other means.
    attempt = own_open_attempt(session, question.id, user_id)
    if referral:  # needed for follow-up; kept with any outcome it was written with
        question.referral = referral
    # Every outcome means a call was made, maybe by other means than the hotline's bridge.
    question.first_callback_at = question.first_callback_at or now
    if attempt is not None:
        attempt.outcome = outcome
        if attempt.state in LIVE_STATES:
            attempt.state = CALLBACK_ENDED
            attempt.ended_at = now
        attempt.updated_at = now
    gave_up = False
    reason: str | None = None
    if outcome == OUTCOME_RESOLVED:
        reason = CLOSE_RESOLVED
    elif outcome == OUTCOME_WRONG_NUMBER:
        reason = CLOSE_WRONG_NUMBER
    elif outcome == OUTCOME_FOLLOW_UP:
        question.next_callback_at = None
        # The resident was reached: earlier failed attempts no longer count towards giving up
        # (the next lawyer's one "no answer" must not close the question and send the "we
        # could not reach you" SMS to someone a lawyer has just spoken to).
        question.callback_attempts = 0
        reprioritise(question)
        release(question)
    elif outcome == OUTCOME_NO_ANSWER:
        question.callback_attempts = (question.callback_attempts or 0) + 1
        reprioritise(question)
        if question.callback_attempts >= policy.max_attempts:
            reason, gave_up = CLOSE_NO_ANSWER, True
        else:
            delay = retry_delay(question.callback_attempts, policy.delays)
            question.next_callback_at = next_callback_time(now, delay, policy.hours,
                                                           policy.zone)
            release(question)
    if reason is not None:
        close_question(question, user_id, reason, now)
    session.flush()
    return OutcomeResult(outcome=outcome, closed=reason is not None, close_reason=reason,
                         failed_attempts=question.callback_attempts or 0,
                         next_callback_at=question.next_callback_at, gave_up=gave_up,
                         attempt_id=attempt.id if attempt else None)
