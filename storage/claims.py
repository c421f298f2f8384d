"""Consultants' claims on questions: one holder at a time, lapsing when idle. Never commits.

Each change is one UPDATE with its condition in the WHERE clause (as claim_transcription in
storage.transcripts): of two consultants who claim at once, exactly one changes the row. On
PostgreSQL the second UPDATE waits for the first's row lock, then re-checks the condition on
the committed row; on SQLite every transaction begins IMMEDIATE, so the second waits for the
first to commit and then finds the question claimed.

A claim whose question has a live callback attempt (storage.callbacks.has_live_attempt) is not
idle, however long since it was touched: Twilio's status callbacks only touch it when a leg
changes, and a consultation can last longer than HOTLINE_CLAIM_IDLE_MINUTES.

One resident, one consultant at a time: a question cannot be claimed while another question of
the same caller is held by someone else (a live claim), so an elderly resident who called twice
is not rung by two lawyers about one problem; the holder sees the other question on the page
and takes it too. The caller's row is locked first (FOR NO KEY UPDATE on PostgreSQL; SQLite's
transactions are serial), so two claims on two questions of one resident are decided one after
the other. The caller's row before the question's, as elsewhere: the SMS webhook upserts the
caller before it adds to a question, retention locks the caller before its questions, and the
voice webhooks do not lock the caller after a question. "Take the next question" and the Claim
button lock the user's own row before any of that (claim_next_once, claim_once), so that a form
posted twice, or from two tabs at once, claims once and is audited once.

A claim that lapses is written to the audit log (storage.audit), by "the system" (no user):
RELEASED with `lapsed_claim_of`, the holder's name, whether the sweep returned the question to
the queue (lapse_claims) or another consultant took it, or another question of the resident,
over (claim_question). A coordinator reading a question's history sees why it changed hands.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import ColumnElement, and_, case, exists, or_, select, update
from sqlalchemy.orm import Session, aliased, selectinload
from sqlalchemy.orm.util import AliasedClass

from storage import audit
from storage.callbacks import has_live_attempt
from storage.models import QUESTION_CLAIMED, QUESTION_WAITING, Caller, Question, User
from storage.queue import STATUS_DUE, QueueFilter, due_ids


def _changed(result: object) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


def claim_question(session: Session, question_id: int, user_id: int, now: datetime,
                   lapse_before: datetime) -> bool:
    """Give the question to the user; return whether they hold it now.

    It can be taken when it is waiting, when the user holds it already (the claim is touched),
    or when its holder has not touched it since lapse_before and no call for it is going on.
    Closed questions cannot be taken.
    """
    caller_id = lock_resident_of(session, question_id)
    # Someone else's lapsed claim that this one takes over: its holder, read under the row's
    # lock (PostgreSQL; SQLite's transactions are serial) for the audit log. Only such a row is
    # locked here: one that cannot be taken is left unlocked, as the UPDATE below leaves it
    # (take-the-next tries up to NEXT_TRIES questions in one transaction).
    taken_over = session.execute(
        select(User.name)
        .join(Question, User.id == Question.claimed_by_id)
        .where(Question.id == question_id, Question.status == QUESTION_CLAIMED,
               Question.claimed_by_id != user_id, _lapsed(now, lapse_before),
               ~_resident_held_by_other(user_id, now, lapse_before))
        .with_for_update(of=Question)).first()
    held_by_user = and_(Question.status == QUESTION_CLAIMED, Question.claimed_by_id == user_id)
    claimable = or_(
        Question.status == QUESTION_WAITING,
        held_by_user,
        and_(Question.status == QUESTION_CLAIMED, _lapsed(now, lapse_before)),
    )
    result = session.execute(
        update(Question)
        .where(Question.id == question_id, claimable,
               ~_resident_held_by_other(user_id, now, lapse_before))
        .values(
            status=QUESTION_CLAIMED,
            claimed_by_id=user_id,
            # Claiming again keeps the time of the first claim.
            claimed_at=case((held_by_user, Question.claimed_at), else_=now),
            claim_touched_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    won = _changed(result) == 1
    if won and taken_over is not None:
        _audit_lapse(session, question_id, taken_over.name, now)
    if won and caller_id is not None:
        # The resident is this user's now: someone else's lapsed claims on their other
        # questions end here, or touching one (touch_claim) would bring it back to life and
        # the resident would have two consultants after all.
        _end_lapsed(session, now, lapse_before, Question.caller_id == caller_id,
                    Question.id != question_id, Question.claimed_by_id != user_id,
                    skip_locked=False)
    return won


def holds(session: Session, question_id: int, user_id: int) -> bool:
    """Whether the user holds the question's claim now (lapsed or not)."""
    return session.scalar(select(Question.id).where(
        Question.id == question_id, Question.status == QUESTION_CLAIMED,
        Question.claimed_by_id == user_id)) is not None


def _audit_lapse(session: Session, question_id: int, holder: str | None,
                 now: datetime) -> None:
    audit.record(session, None, audit.RELEASED, question_id, at=now,
                 lapsed_claim_of=holder or "?")


def _end_lapsed(session: Session, now: datetime, lapse_before: datetime,
                *where: ColumnElement[bool], skip_locked: bool) -> int:
    """Return the lapsed claims among the questions where says to the queue, each with its
    audit event; return how many. skip_locked: pass over rows another transaction holds (the
    sweep, which takes no caller's lock first: a claim holding a resident's question while it
    ends their other lapsed ones would otherwise wait for the sweep while the sweep waits for
    it; what the sweep passes over, the next one returns)."""
    lapsed = session.execute(
        select(Question.id, User.name)
        .outerjoin(User, User.id == Question.claimed_by_id)
        .where(Question.status == QUESTION_CLAIMED, _lapsed(now, lapse_before), *where)
        .order_by(Question.id)
        .with_for_update(of=Question, skip_locked=skip_locked)).all()
    if not lapsed:
        return 0
    # Locked (PostgreSQL) or serial (SQLite): still lapsed, so each of them changes.
    session.execute(
        update(Question)
        .where(Question.id.in_([question_id for question_id, _name in lapsed]))
        .values(**_UNCLAIMED)
        .execution_options(synchronize_session=False))
    for question_id, name in lapsed:
        _audit_lapse(session, question_id, name, now)
    return len(lapsed)


# How many of the queue's first due questions "take the next" tries before it says none is free.
NEXT_TRIES = 200


def claim_next(session: Session, filters: QueueFilter, user_id: int, now: datetime,
               lapse_before: datetime) -> int | None:
    """Claim the first due question of the filtered queue (its priority order) that the user
    may take, and return its id; None when none of the first NEXT_TRIES can be taken.

    Each try is claim_question, so a question another consultant takes meanwhile, or whose
    resident someone else holds, is passed over for the next one."""
    due = QueueFilter(status=STATUS_DUE, language=filters.language, topic=filters.topic,
                      channel=filters.channel, region=filters.region)
    for question_id in due_ids(session, due, now, NEXT_TRIES):
        if claim_question(session, question_id, user_id, now, lapse_before):
            return question_id
    return None


# A "take the next question" that finds the user's own claim made this recently, and not opened
# since, is the same click sent twice (claim_next_once).
REPEAT_TAKE_WINDOW = timedelta(seconds=10)


@dataclass(frozen=True)
class Taken:
    """What "take the next question" gave: the question, and whether it is the user's claim
    of a moment ago (a repeated request: nothing new claimed, nothing to audit)."""

    question_id: int
    repeat: bool


def claim_next_once(session: Session, filters: QueueFilter, user_id: int, now: datetime,
                    lapse_before: datetime) -> Taken | None:
    """Take the next question for the user (claim_next) once per click: a request that
    repeats one answered a moment ago gets the question that one claimed, not another.

    A form posted twice (a double click before the page's script disables the button, a
    browser without JavaScript, a resubmission after a slow answer) sends two requests; each
    claimed a question, and the one the consultant never saw stayed held until the claim
    lapsed (HOTLINE_CLAIM_IDLE_MINUTES), delaying that resident's callback.

    The user's row is locked first (lock_user), so two such requests of one user are decided
    one after the other, on PostgreSQL too (read committed: the second's statements after the
    lock see what the first committed); SQLite's transactions are serial already. Then a live
    claim of the user's, made within REPEAT_TAKE_WINDOW of now and untouched since it was made
    (claim_touched_at still equals claimed_at: opening the question's page, or anything done
    on it, touches the claim), is the answer: Taken(repeat=True), and the caller writes no
    second CLAIMED audit event.

    The window, 10 seconds: the copies of one click arrive within a second or two, and the
    first may wait a few seconds for locks (SQLite's busy timeout is 5 s) before it commits; a
    consultant wanting another question has opened the first one by then (the redirect opens
    it), which ends the repeat however soon they click again. It is measured from the first
    request's own clock (claimed_at), with no upper bound, since that one may have read the
    clock after the second. Longer would not be wrong, but a claim whose page never loaded (a
    network error) would then keep sending the consultant back to it for longer. The filters
    are not compared: copies of one form carry the same ones, and a claim made by the
    question's own Claim button and not opened yet is equally the question to open.
    """
    lock_user(session, user_id)
    recent = session.scalar(
        select(Question.id)
        .where(Question.status == QUESTION_CLAIMED, Question.claimed_by_id == user_id,
               Question.claimed_at >= now - REPEAT_TAKE_WINDOW,
               Question.claim_touched_at == Question.claimed_at,
               Question.claim_touched_at >= lapse_before)
        .order_by(Question.claimed_at.desc(), Question.id.desc())
        .limit(1))
    if recent is not None:
        return Taken(recent, repeat=True)
    question_id = claim_next(session, filters, user_id, now, lapse_before)
    return None if question_id is None else Taken(question_id, repeat=False)


def claim_once(session: Session, question_id: int, user_id: int, now: datetime,
               lapse_before: datetime) -> Taken | None:
    """claim_question for the question's Claim button: Taken (repeat when the user held it
    already: a second click, another tab, nothing new to audit), or None when refused.

    The user's row is locked first (lock_user), as claim_next_once does, so two tabs of one
    user claiming the same question at once are decided one after the other on PostgreSQL
    too: the second sees the first's claim and is the repeat (one CLAIMED audit event)."""
    lock_user(session, user_id)
    theirs = holds(session, question_id, user_id)
    if not claim_question(session, question_id, user_id, now, lapse_before):
        return None
    return Taken(question_id, repeat=theirs)


def lock_user(session: Session, user_id: int) -> None:
    """Lock the user's row (FOR NO KEY UPDATE on PostgreSQL; SQLite's transactions are
    serial), before any resident's or question's row: one user's takes of the next question
    wait for each other. Rows that only point to the user (a claim, an audit event, a note)
    are not held up."""
    session.execute(select(User.id).where(User.id == user_id).with_for_update(key_share=True))


def _lapsed(now: datetime, lapse_before: datetime) -> ColumnElement[bool]:
    """SQL about the (claimed) Question in the statement: its claim was not touched since
    lapse_before, and no call for it is going on."""
    return and_(or_(Question.claim_touched_at.is_(None),
                    Question.claim_touched_at < lapse_before),
                ~has_live_attempt(now))


def _live_claim(question: type[Question] | AliasedClass[Question], now: datetime,
                lapse_before: datetime) -> ColumnElement[bool]:
    """SQL: the question is held, and its claim has not lapsed."""
    return and_(question.status == QUESTION_CLAIMED,
                or_(question.claim_touched_at >= lapse_before,
                    has_live_attempt(now, question.id)))


def _resident_held_by_other(user_id: int, now: datetime,
                            lapse_before: datetime) -> ColumnElement[bool]:
    """SQL about the Question in the statement: another question of its caller is held by
    someone other than the user."""
    sibling = aliased(Question)
    return exists().where(Question.caller_id.is_not(None),
                          sibling.caller_id == Question.caller_id, sibling.id != Question.id,
                          sibling.claimed_by_id != user_id,
                          _live_claim(sibling, now, lapse_before))


@dataclass(frozen=True)
class ResidentHolder:
    """Who holds one of a resident's questions: that question, and its holder."""

    question_id: int
    user_id: int
    name: str


def resident_holders(session: Session, caller_ids: Iterable[int], now: datetime,
                     lapse_before: datetime, *, other_than_user: int | None = None,
                     other_than_question: int | None = None) -> dict[int, ResidentHolder]:
    """For each of these callers with a question held (a live claim), who holds it (the
    earliest claim when several are held), leaving out one user's claims and one question."""
    wanted = sorted(set(caller_ids))
    if not wanted:
        return {}
    statement = (
        select(Question.caller_id, Question.id, User.id, User.name)
        .join(User, User.id == Question.claimed_by_id)
        .where(Question.caller_id.in_(wanted), _live_claim(Question, now, lapse_before))
        .order_by(Question.claimed_at.desc(), Question.id.desc())
    )
    if other_than_user is not None:
        statement = statement.where(Question.claimed_by_id != other_than_user)
    if other_than_question is not None:
        statement = statement.where(Question.id != other_than_question)
    rows = session.execute(statement).all()
    return {caller_id: ResidentHolder(question_id, user_id, name)
            for caller_id, question_id, user_id, name in rows if caller_id is not None}


def held_by(session: Session, user_id: int, now: datetime, lapse_before: datetime,
            limit: int = 20) -> list[int]:
    """The questions the user holds now (live claims), the longest held first, at most limit:
    what the queue reminds them of (a question taken and forgotten waits for its lapse)."""
    return list(session.scalars(
        select(Question.id)
        .where(Question.claimed_by_id == user_id, _live_claim(Question, now, lapse_before))
        .order_by(Question.claimed_at, Question.id).limit(limit)))


def touch_claim(session: Session, question_id: int, user_id: int, now: datetime) -> bool:
    """Note that the holder is still working on the question; false if they do not hold it."""
    result = session.execute(
        update(Question)
        .where(Question.id == question_id, Question.status == QUESTION_CLAIMED,
               Question.claimed_by_id == user_id)
        .values(claim_touched_at=now)
        .execution_options(synchronize_session=False)
    )
    return _changed(result) == 1


def held_siblings(session: Session, question: Question, user_id: int,
                  limit: int | None = None) -> list[Question]:
    """The resident's other questions this user holds, oldest first: the outcome form offers
    them the same outcome, since one call answers them together."""
    if question.caller_id is None:
        return []
    return list(session.scalars(
        select(Question)
        .where(Question.caller_id == question.caller_id, Question.id != question.id,
               Question.status == QUESTION_CLAIMED, Question.claimed_by_id == user_id)
        .order_by(Question.created_at, Question.id).limit(limit)))


def lock_resident_of(session: Session, question_id: int) -> int | None:
    """Lock the caller's row of the question before any of their questions; return the
    caller's id (None: no caller, nothing locked).

    Claims, the outcome form and receipts (hotline.receipts) on one resident then wait for
    each other instead of locking the same questions in different orders. FOR NO KEY UPDATE:
    rows that only point to the caller (an SMS queued, a question stored) are not held up, so
    a consultant answering by SMS while another claims cannot deadlock with them.
    """
    caller_id = session.scalar(select(Question.caller_id).where(Question.id == question_id))
    if caller_id is not None:
        session.execute(select(Caller.id).where(Caller.id == caller_id)
                        .with_for_update(key_share=True))
    return caller_id


_UNCLAIMED = {"status": QUESTION_WAITING, "claimed_by_id": None, "claimed_at": None,
              "claim_touched_at": None}


def release_claim(session: Session, question_id: int, user_id: int) -> bool:
    """Put the user's question back in the queue; false if they do not hold it."""
    result = session.execute(
        update(Question)
        .where(Question.id == question_id, Question.status == QUESTION_CLAIMED,
               Question.claimed_by_id == user_id)
        .values(**_UNCLAIMED)
        .execution_options(synchronize_session=False)
    )
    return _changed(result) == 1


def release_claims_of(session: Session, user_id: int, now: datetime) -> list[int]:
    """Return every question the user holds to the queue (they logged out, or their account
    was closed); return the questions' ids, in order.

    A question with a call going on stays claimed, and lapses as any other when the call ends.
    """
    held = list(session.scalars(
        select(Question.id)
        .where(Question.status == QUESTION_CLAIMED, Question.claimed_by_id == user_id,
               ~has_live_attempt(now))
        .order_by(Question.id)
        .with_for_update(of=Question)))
    if not held:
        return []
    # Locked now (in id order, as every claim locks), and looked at again: on PostgreSQL a call
    # started on one of them in another tab while this waited for its lock is committed by
    # now, and this statement's snapshot sees it (the select's, older, did not).
    return sorted(session.scalars(
        update(Question)
        .where(Question.id.in_(held), Question.status == QUESTION_CLAIMED,
               Question.claimed_by_id == user_id, ~has_live_attempt(now))
        .values(**_UNCLAIMED)
        .returning(Question.id)
        .execution_options(synchronize_session=False)))


def lapse_claims(session: Session, lapse_before: datetime, now: datetime | None = None) -> int:
    """Return claims untouched since lapse_before to the queue; return how many.

    A question with a call going on (as of now, by default the present moment) stays claimed.
    """
    return _end_lapsed(session, now or datetime.now(UTC), lapse_before, skip_locked=True)


def open_questions(session: Session, limit: int | None = None) -> list[Question]:
    """Return the waiting and claimed questions in the queue's order, with their holders.

    The queue's order is priority first (storage.queue); the queue page pages and filters it
    with storage.queue.queue_page.
    """
    statement = (
        select(Question)
        .where(Question.status.in_((QUESTION_WAITING, QUESTION_CLAIMED)))
        .order_by(Question.priority_at, Question.id)
        .options(selectinload(Question.claimed_by))
        .limit(limit)
    )
    return list(session.scalars(statement))
