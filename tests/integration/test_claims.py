"""Claiming questions: one holder at a time, even for two consultants at the same moment."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, text, update
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.test import TestResponse

import storage.users
from hotline.config import Settings
from storage.claims import (
    Taken,
    claim_next_once,
    claim_once,
    claim_question,
    lapse_claims,
    release_claim,
    release_claims_of,
    resident_holders,
    touch_claim,
)
from storage.db import unit_of_work
from storage.models import (
    CALLBACK_BRIDGING,
    CALLBACK_CONNECTED,
    CALLBACK_DIALING,
    CALLBACK_ENDED,
    CHANNEL_VOICE,
    QUESTION_CLAIMED,
    QUESTION_CLOSED,
    QUESTION_WAITING,
    AuditEvent,
    CallbackAttempt,
    Caller,
    Question,
    SmsMessage,
    User,
)
from storage.queue import QueueFilter
from tests.support import BASE_URL, at_once, held_meanwhile, in_two_threads

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
IDLE = timedelta(minutes=30)
PASSWORD = "correct horse 42"
Db = Callable[[], AbstractContextManager[Session]]


def _user(session: Session, email: str, name: str, role: str = "consultant") -> int:
    user = User(email=email, name=name, role=role,
                password_hash=storage.users.hasher.hash(PASSWORD))
    session.add(user)
    session.flush()
    return user.id


def _question(session: Session, **changes: object) -> int:
    question = Question(channel=CHANNEL_VOICE, language="ru", topic="pension", **changes)
    session.add(question)
    session.flush()
    return question.id


def _lapse_events(session: Session) -> list[tuple[int | None, str, int | None, dict[str, Any]]]:
    """The audit log's events that ended a lapsed claim: (user, action, question, detail)."""
    return [(e.user_id, e.action, e.question_id, e.detail)
            for e in session.scalars(select(AuditEvent).order_by(AuditEvent.id))]


def _state(session: Session, question_id: int) -> tuple[str, int | None]:
    question = session.get(Question, question_id)
    assert question is not None
    return question.status, question.claimed_by_id


@pytest.fixture
def people(session_factory: sessionmaker[Session]) -> tuple[int, int, int]:
    """Two consultants' ids and a waiting question's id."""
    with unit_of_work(session_factory) as session:
        return (_user(session, "a@example.kz", "Aigerim"), _user(session, "b@example.kz", "Bolat"),
                _question(session))


# -- storage ----------------------------------------------------------------------------------

def _claim_at_once(session_factory: sessionmaker[Session],
                   claims: dict[int, int]) -> tuple[dict[int, bool], list[str]]:
    """Each user (key) claims a question (value) in a transaction of their own, at the same
    moment; return who won, and (on PostgreSQL) the questions' states each saw before."""
    postgres = session_factory.kw["bind"].dialect.name == "postgresql"
    seen: list[str] = []

    def meet(session: Session, barrier: threading.Barrier) -> None:
        if postgres:
            # Both transactions are open and both see the questions waiting before either
            # updates: a read-then-write claim would let both win here.
            seen.extend(_state(session, q)[0] for q in sorted(set(claims.values())))
        # On SQLite the transaction's first statement takes the write lock (BEGIN IMMEDIATE),
        # so the sessions meet before it and the database orders them.
        barrier.wait()

    def consultant(user_id: int) -> Callable[[Session], tuple[int, bool]]:
        return lambda session: (user_id, claim_question(session, claims[user_id], user_id,
                                                        NOW, NOW - IDLE))

    return dict(at_once(session_factory, [consultant(u) for u in claims], meet)), seen


def test_two_consultants_claiming_at_the_same_moment_one_wins(
        session_factory: sessionmaker[Session], people: tuple[int, int, int]) -> None:
    a, b, question_id = people
    results, seen = _claim_at_once(session_factory, {a: question_id, b: question_id})
    if session_factory.kw["bind"].dialect.name == "postgresql":
        assert seen == [QUESTION_WAITING, QUESTION_WAITING]
    assert sorted(results.values()) == [False, True]
    [winner] = [user_id for user_id, won in results.items() if won]
    with unit_of_work(session_factory) as session:
        assert _state(session, question_id) == (QUESTION_CLAIMED, winner)


def _resident(session: Session, phone: str = "+77011234567") -> int:
    caller = Caller(phone=phone)
    session.add(caller)
    session.flush()
    return caller.id


def test_two_questions_of_one_resident_go_to_one_consultant_at_the_same_moment(
        session_factory: sessionmaker[Session], people: tuple[int, int, int]) -> None:
    """A resident who called twice is not rung by two lawyers: while one consultant's claim on
    the first question is not committed yet, another's claim on the second waits for it (the
    caller's row is locked) and is then refused."""
    a, b, _question_id = people
    with unit_of_work(session_factory) as session:
        resident = _resident(session)
        first, second = _question(session, caller_id=resident), _question(
            session, caller_id=resident)

    def consultant_a(session: Session) -> None:  # b claims while it is held
        assert claim_question(session, first, a, NOW, NOW - IDLE)

    with held_meanwhile(lambda: unit_of_work(session_factory), consultant_a), \
            unit_of_work(session_factory) as session:
        won = claim_question(session, second, b, NOW, NOW - IDLE)
    assert won is False
    with unit_of_work(session_factory) as session:
        assert _state(session, first) == (QUESTION_CLAIMED, a)
        assert _state(session, second) == (QUESTION_WAITING, None)
        # a takes the other one too; b still cannot.
        assert not claim_question(session, second, b, NOW, NOW - IDLE)
        assert claim_question(session, second, a, NOW, NOW - IDLE)


def _take_next_twice_at_once(session_factory: sessionmaker[Session], user_id: int,
                             *, hold: float = 0.0) -> list[Taken | None]:
    """The user takes the next question in two transactions of their own, at the same moment
    (hold: the first to finish keeps its transaction open that long, uncommitted)."""
    return _twice_at_once(session_factory, lambda session: claim_next_once(
        session, QueueFilter(), user_id, NOW, NOW - IDLE), hold=hold)


def _twice_at_once(session_factory: sessionmaker[Session],
                   work: Callable[[Session], Taken | None], *,
                   hold: float = 0.0) -> list[Taken | None]:
    """Run work in two transactions at the same moment (hold: each keeps its transaction open
    that long after work, uncommitted); return what each gave."""
    postgres = session_factory.kw["bind"].dialect.name == "postgresql"

    def meet(session: Session, barrier: threading.Barrier) -> None:
        if postgres:
            # Both transactions are open, and have read, before either takes.
            session.execute(text("SELECT 1"))
        barrier.wait()  # on SQLite before BEGIN IMMEDIATE: the database orders them

    def held(session: Session) -> Taken | None:
        taken = work(session)
        time.sleep(hold)
        return taken

    return in_two_threads(session_factory, held, meet)


@pytest.mark.parametrize("hold", [0.0, 0.5])
def test_the_same_consultant_taking_the_next_twice_at_once_claims_one(
        session_factory: sessionmaker[Session], people: tuple[int, int, int],
        hold: float) -> None:
    """A form posted twice runs as two requests at the same moment: one question is claimed,
    and both requests open it; the second is a repeat (no second CLAIMED event). On PostgreSQL
    the second request waits for the first's lock on the user's row, then sees its claim (with
    hold, the first claim is surely made, and uncommitted, while the second runs)."""
    a, b, first = people
    with unit_of_work(session_factory) as session:
        second, third = _question(session), _question(session)
    results = _take_next_twice_at_once(session_factory, a, hold=hold)
    assert all(taken is not None for taken in results)
    assert sorted((t.question_id, t.repeat) for t in results if t is not None) == [
        (first, False), (first, True)]
    with unit_of_work(session_factory) as session:
        assert [_state(session, q) for q in (first, second, third)] == [
            (QUESTION_CLAIMED, a), (QUESTION_WAITING, None), (QUESTION_WAITING, None)]
        # Another consultant's take is no repeat of a's.
        assert claim_next_once(session, QueueFilter(), b, NOW, NOW - IDLE) == Taken(second,
                                                                                    False)
    with unit_of_work(session_factory) as session:
        # Once a has opened the question (the claim touched), a's next take is a new one.
        assert touch_claim(session, first, a, NOW + timedelta(seconds=1))
    with unit_of_work(session_factory) as session:
        assert claim_next_once(session, QueueFilter(), a, NOW + timedelta(seconds=2),
                               NOW - IDLE) == Taken(third, False)


@pytest.mark.parametrize("hold", [0.0, 0.5])
def test_one_consultant_claiming_a_question_in_two_tabs_at_once_claims_it_once(
        session_factory: sessionmaker[Session], people: tuple[int, int, int],
        hold: float) -> None:
    """The Claim button of one question pressed in two tabs at the same moment: both open it,
    one is the claim and the other a repeat (the page writes one CLAIMED event). On PostgreSQL
    the second waits for the first's lock on the user's row, then sees the claim is theirs."""
    a, b, question_id = people
    results = _twice_at_once(session_factory, lambda session: claim_once(
        session, question_id, a, NOW, NOW - IDLE), hold=hold)
    assert sorted((t.question_id, t.repeat) for t in results if t is not None) == [
        (question_id, False), (question_id, True)]
    with unit_of_work(session_factory) as session:
        assert _state(session, question_id) == (QUESTION_CLAIMED, a)
        # Another consultant is refused, and a's later click is a repeat too.
        assert claim_once(session, question_id, b, NOW, NOW - IDLE) is None
        assert claim_once(session, question_id, a, NOW, NOW - IDLE) == Taken(question_id, True)


def test_a_residents_question_on_a_call_blocks_the_others_however_idle(
        session_factory: sessionmaker[Session], people: tuple[int, int, int]) -> None:
    """a's claim was touched long ago, but a call about it is going on: the resident is a's."""
    a, b, _question_id = people
    later = NOW + IDLE * 3
    with unit_of_work(session_factory) as session:
        resident = _resident(session)
        first, second = _question(session, caller_id=resident), _question(
            session, caller_id=resident)
        assert claim_question(session, first, a, NOW, NOW - IDLE)
        session.add(CallbackAttempt(question_id=first, consultant_id=a,
                                    state=CALLBACK_CONNECTED, created_at=later,
                                    updated_at=later))
    with unit_of_work(session_factory) as session:
        assert not claim_question(session, second, b, later, later - IDLE)
        assert resident_holders(session, [resident], later, later - IDLE)[resident].user_id == a


def test_a_claim_waiting_on_the_holder_does_not_deadlock_with_their_sms(
        session_factory: sessionmaker[Session], people: tuple[int, int, int]) -> None:
    """a comes back to a question whose claim had gone idle and sends the resident an SMS (a
    row pointing to the caller); b's claim, made meanwhile, sees the claim lapsed, locks the
    caller and waits for the question's row. The caller's lock lets the SMS row in (FOR NO
    KEY UPDATE), so neither is aborted as a deadlock, and a keeps the question."""
    a, b, _question_id = people
    later = NOW + IDLE * 2
    with unit_of_work(session_factory) as session:
        resident = _resident(session)
        question = _question(session, caller_id=resident)
        assert claim_question(session, question, a, NOW, NOW - IDLE)

    def touch(session: Session) -> None:
        assert touch_claim(session, question, a, later)  # the question's row locked

    def sms(session: Session) -> None:  # after b's claim locked the caller, waiting
        session.add(SmsMessage(direction="out", caller_id=resident, phone="+7701",
                               body="Сәлеметсіз бе", question_id=question, status="queued"))

    with held_meanwhile(lambda: unit_of_work(session_factory), touch, sms), \
            unit_of_work(session_factory) as session:
        assert not claim_question(session, question, b, later, later - IDLE)
    with unit_of_work(session_factory) as session:
        assert _state(session, question) == (QUESTION_CLAIMED, a)
        assert len(session.scalars(select(SmsMessage)).all()) == 1


def test_logging_out_while_a_call_starts_in_another_tab_keeps_the_question(
        session_factory: sessionmaker[Session], people: tuple[int, int, int]) -> None:
    """a presses Call in one tab (the question's row locked, the attempt not committed yet)
    while logging out in another: the logout waits for the row, then sees the call, and the
    question stays a's (on PostgreSQL its first read, older, did not see the call)."""
    a, _b, question_id = people
    with unit_of_work(session_factory) as session:
        assert claim_question(session, question_id, a, NOW, NOW - IDLE)

    def touch(session: Session) -> None:
        assert touch_claim(session, question_id, a, NOW)  # the question's row locked

    def call(session: Session) -> None:  # while the logout reads, then waits for the row
        session.add(CallbackAttempt(question_id=question_id, consultant_id=a,
                                    state=CALLBACK_DIALING, created_at=NOW, updated_at=NOW))

    with held_meanwhile(lambda: unit_of_work(session_factory), touch, call), \
            unit_of_work(session_factory) as session:
        released = release_claims_of(session, a, NOW)
    assert released == []
    with unit_of_work(session_factory) as session:
        assert _state(session, question_id) == (QUESTION_CLAIMED, a)


def test_claiming_a_residents_question_ends_others_lapsed_claims_on_the_rest(
        session_factory: sessionmaker[Session], people: tuple[int, int, int]) -> None:
    """a's claim on the first question lapsed (still marked claimed); b claims the second: a's
    lapsed claim ends there, so a touching the first cannot bring it back."""
    a, b, _question_id = people
    later = NOW + IDLE + timedelta(minutes=1)
    with unit_of_work(session_factory) as session:
        resident = _resident(session)
        first, second = _question(session, caller_id=resident), _question(
            session, caller_id=resident)
        elsewhere = _question(session)
        assert claim_question(session, first, a, NOW, NOW - IDLE)
        assert claim_question(session, elsewhere, a, NOW, NOW - IDLE)
    with unit_of_work(session_factory) as session:
        assert claim_question(session, second, b, later, later - IDLE)
        assert _state(session, first) == (QUESTION_WAITING, None)
        assert not touch_claim(session, first, a, later)
        assert _state(session, elsewhere) == (QUESTION_CLAIMED, a)  # another resident's
        # The system ended Aigerim's idle claim on the first question, and says so.
        assert _lapse_events(session) == [
            (None, "released", first, {"lapsed_claim_of": "Aigerim"})]


def test_a_residents_other_question_frees_up_when_the_claim_lapses_or_is_released(
        session_factory: sessionmaker[Session], people: tuple[int, int, int]) -> None:
    a, b, _question_id = people
    with unit_of_work(session_factory) as session:
        resident, other = _resident(session), _resident(session, "+77017654321")
        first, second = _question(session, caller_id=resident), _question(
            session, caller_id=resident)
        elsewhere = _question(session, caller_id=other)
        hidden, hidden_too = _question(session), _question(session)  # no number: not linked
        assert claim_question(session, first, a, NOW, NOW - IDLE)
        assert claim_question(session, hidden, a, NOW, NOW - IDLE)
    with unit_of_work(session_factory) as session:
        assert not claim_question(session, second, b, NOW, NOW - IDLE)
        assert claim_question(session, elsewhere, b, NOW, NOW - IDLE)
        assert claim_question(session, hidden_too, b, NOW, NOW - IDLE)
        holders = resident_holders(session, [resident, other, 999], NOW, NOW - IDLE)
        assert {k: (v.question_id, v.user_id) for k, v in holders.items()} == {
            resident: (first, a), other: (elsewhere, b)}
    later = NOW + IDLE + timedelta(minutes=1)  # a's claim went idle
    with unit_of_work(session_factory) as session:
        assert resident not in resident_holders(session, [resident], later, later - IDLE)
        assert claim_question(session, second, b, later, later - IDLE)
        assert release_claim(session, second, b)
    with unit_of_work(session_factory) as session:
        # Released: a, back at the first question, may take the second too.
        assert claim_question(session, second, a, later, later - IDLE)


def test_claiming_again_keeps_the_claim_and_touches_it(
        session_factory: sessionmaker[Session], people: tuple[int, int, int]) -> None:
    a, b, question_id = people
    with unit_of_work(session_factory) as session:
        assert claim_question(session, question_id, a, NOW, NOW - IDLE)
    later = NOW + timedelta(minutes=20)
    with unit_of_work(session_factory) as session:
        assert claim_question(session, question_id, a, later, later - IDLE)
        assert not claim_question(session, question_id, b, later, later - IDLE)
        question = session.get(Question, question_id)
        assert question is not None
        assert (question.claimed_at, question.claim_touched_at) == (NOW, later)


def test_a_lapsed_claim_can_be_taken_and_a_touched_one_cannot(
        session_factory: sessionmaker[Session], people: tuple[int, int, int]) -> None:
    a, b, question_id = people
    with unit_of_work(session_factory) as session:
        assert claim_question(session, question_id, a, NOW, NOW - IDLE)
    touched = NOW + timedelta(minutes=25)
    with unit_of_work(session_factory) as session:
        assert touch_claim(session, question_id, a, touched)
        assert not touch_claim(session, question_id, b, touched)
    soon = NOW + timedelta(minutes=40)  # 15 minutes after the touch: still held
    with unit_of_work(session_factory) as session:
        assert not claim_question(session, question_id, b, soon, soon - IDLE)
    late = touched + IDLE + timedelta(seconds=1)
    with unit_of_work(session_factory) as session:
        assert _lapse_events(session) == []  # a touched claim is not taken over
        assert claim_question(session, question_id, b, late, late - IDLE)
        question = session.get(Question, question_id)
        assert question is not None
        assert (question.status, question.claimed_by_id, question.claimed_at) == (
            QUESTION_CLAIMED, b, late)
        # Bolat took it over: the log says whose claim had lapsed.
        assert _lapse_events(session) == [
            (None, "released", question_id, {"lapsed_claim_of": "Aigerim"})]
    with unit_of_work(session_factory) as session:
        assert not touch_claim(session, question_id, a, late)  # a lost it
        assert not release_claim(session, question_id, a)


def test_release_returns_the_question_to_the_queue(
        session_factory: sessionmaker[Session], people: tuple[int, int, int]) -> None:
    a, b, question_id = people
    with unit_of_work(session_factory) as session:
        assert claim_question(session, question_id, a, NOW, NOW - IDLE)
        assert not release_claim(session, question_id, b)
        assert release_claim(session, question_id, a)
        assert _state(session, question_id) == (QUESTION_WAITING, None)
        assert claim_question(session, question_id, b, NOW, NOW - IDLE)


def test_lapse_claims_returns_stale_ones_to_waiting(
        session_factory: sessionmaker[Session], people: tuple[int, int, int]) -> None:
    a, b, stale = people
    with unit_of_work(session_factory) as session:
        fresh = _question(session)
        closed = _question(session, status=QUESTION_CLOSED)
        assert claim_question(session, stale, a, NOW, NOW - IDLE)
        later = NOW + timedelta(minutes=20)
        assert claim_question(session, fresh, b, later, later - IDLE)
    check = NOW + IDLE + timedelta(minutes=1)
    with unit_of_work(session_factory) as session:
        assert lapse_claims(session, check - IDLE) == 1
    with unit_of_work(session_factory) as session:
        assert _lapse_events(session) == [
            (None, "released", stale, {"lapsed_claim_of": "Aigerim"})]
        assert _state(session, stale) == (QUESTION_WAITING, None)
        assert _state(session, fresh) == (QUESTION_CLAIMED, b)
        assert _state(session, closed) == (QUESTION_CLOSED, None)
        question = session.get(Question, stale)
        assert question is not None
        assert (question.claimed_at, question.claim_touched_at) == (None, None)
        assert lapse_claims(session, check - IDLE) == 0
        assert len(_lapse_events(session)) == 1


def test_closed_and_missing_questions_cannot_be_claimed(
        session_factory: sessionmaker[Session], people: tuple[int, int, int]) -> None:
    a, _b, _question_id = people
    with unit_of_work(session_factory) as session:
        closed = _question(session, status=QUESTION_CLOSED)
        assert not claim_question(session, closed, a, NOW, NOW - IDLE)
        assert not claim_question(session, 999_999, a, NOW, NOW - IDLE)


@pytest.mark.parametrize(("state", "quiet_for", "lapses"), [
    # A consultation longer than the idle time: Twilio sends nothing while both talk.
    (CALLBACK_CONNECTED, timedelta(minutes=45), False),
    (CALLBACK_CONNECTED, timedelta(hours=3, minutes=59), False),
    (CALLBACK_DIALING, timedelta(minutes=9), False),
    (CALLBACK_BRIDGING, timedelta(minutes=9), False),
    # Twilio went quiet for longer than a call can ring or last: the call is taken as over.
    (CALLBACK_CONNECTED, timedelta(hours=4, minutes=1), True),
    (CALLBACK_DIALING, timedelta(minutes=11), True),
    (CALLBACK_ENDED, timedelta(minutes=1), True),
])
def test_a_claim_does_not_lapse_while_its_call_goes_on(
        session_factory: sessionmaker[Session], people: tuple[int, int, int], state: str,
        quiet_for: timedelta, lapses: bool) -> None:
    a, b, question_id = people
    check = NOW + timedelta(hours=5)
    with unit_of_work(session_factory) as session:
        assert claim_question(session, question_id, a, NOW, NOW - IDLE)
        session.add(CallbackAttempt(question_id=question_id, consultant_id=a, state=state,
                                    created_at=NOW, updated_at=check - quiet_for))
    with unit_of_work(session_factory) as session:
        # Nobody else can take it either, though its claim was touched hours ago.
        assert claim_question(session, question_id, b, check, check - IDLE) == lapses
    if lapses:
        return
    with unit_of_work(session_factory) as session:
        assert lapse_claims(session, check - IDLE, now=check) == 0
        assert _state(session, question_id) == (QUESTION_CLAIMED, a)
        # Once the call is over, the idle claim lapses.
        attempt = session.scalars(select(CallbackAttempt)).one()
        attempt.state = CALLBACK_ENDED
    with unit_of_work(session_factory) as session:
        assert lapse_claims(session, check - IDLE, now=check) == 1
        assert _state(session, question_id) == (QUESTION_WAITING, None)


def test_the_idle_time_is_a_setting() -> None:
    assert Settings.from_env({}).claim_idle_minutes == 30
    assert Settings.from_env({"HOTLINE_CLAIM_IDLE_MINUTES": "10"}).claim_idle_minutes == 10


# -- the route --------------------------------------------------------------------------------

TOKEN = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')


class Browser:
    """A consultant's browser on the workspace (cookies, CSRF tokens from the pages, https)."""

    def __init__(self, application: Flask) -> None:
        self.client: FlaskClient = application.test_client()

    def get(self, path: str) -> TestResponse:
        """GET a page, in English."""
        return self.client.get(path, base_url=BASE_URL, headers={"Accept-Language": "en"})

    def post(self, path: str, data: dict[str, str]) -> TestResponse:
        """POST a form from a page of the site."""
        return self.client.post(path, base_url=BASE_URL, data=data,
                                headers={"Accept-Language": "en",
                                         "Referer": f"{BASE_URL}/queue"})

    def token(self, path: str) -> str:
        """The CSRF token of a form on path."""
        match = TOKEN.search(self.get(path).get_data(as_text=True))
        assert match, path
        return match.group(1)

    def login(self, email: str) -> None:
        """Log in with PASSWORD."""
        response = self.post("/login", {"csrf_token": self.token("/login"), "email": email,
                                        "password": PASSWORD})
        assert response.status_code == 302, response.get_data(as_text=True)

    def claim(self, question_id: int) -> TestResponse:
        """Press the question's Claim button on the queue."""
        return self.post(f"/questions/{question_id}/claim",
                         {"csrf_token": self.token("/queue")})


@pytest.fixture
def question_id(app: Flask, db: Db) -> int:
    """A waiting question, with consultants a@ and b@ and coordinator c@ (PASSWORD)."""
    with db() as session:
        _user(session, "a@example.kz", "Aigerim")
        _user(session, "b@example.kz", "Bolat")
        _user(session, "c@example.kz", "Dana", role="coordinator")
        return _question(session)


def _browser(app: Flask, email: str) -> Browser:
    browser = Browser(app)
    browser.login(email)
    return browser


def test_the_first_consultant_claims_and_the_second_is_refused(
        app: Flask, db: Db, question_id: int) -> None:
    a, b = _browser(app, "a@example.kz"), _browser(app, "b@example.kz")
    assert f'action="/questions/{question_id}/claim"' in a.get("/queue").get_data(as_text=True)

    won = a.claim(question_id)
    assert won.status_code == 303
    assert won.headers["Location"] == f"/questions/{question_id}"  # the question's page
    # Claimed questions leave the "due" tab and are listed under "claimed".
    assert f'id="question-{question_id}"' not in a.get("/queue").get_data(as_text=True)
    queue = a.get("/queue?status=claimed").get_data(as_text=True)
    assert "<td data-label=\"Claimed by\">you</td>" in queue

    refused = b.claim(question_id)
    assert refused.status_code == 409
    text = refused.get_data(as_text=True)
    assert "Already taken" in text
    assert f"Question {question_id} is being handled by Aigerim." in text
    others = b.get("/queue?status=claimed").get_data(as_text=True)
    assert "<td data-label=\"Claimed by\">Aigerim</td>" in others
    assert f'action="/questions/{question_id}/claim"' not in others  # no button to press
    with db() as session:
        a_id = session.scalars(select(User.id).where(User.email == "a@example.kz")).one()
        assert _state(session, question_id) == (QUESTION_CLAIMED, a_id)


def test_one_resident_one_consultant_in_the_queue_and_on_the_page(
        app: Flask, db: Db, question_id: int) -> None:
    """Aigerim holds a resident's question: Bolat sees their other question as hers and
    cannot claim it; Aigerim is told on her page and takes it with one click."""
    with db() as session:
        resident = _resident(session)
        first, second = _question(session, caller_id=resident), _question(
            session, caller_id=resident)
    a, b = _browser(app, "a@example.kz"), _browser(app, "b@example.kz")
    assert a.claim(first).status_code == 303
    queue = b.get("/queue").get_data(as_text=True)
    held = f"Aigerim holds question {first} of this resident"
    assert f'<td data-label="Claimed by">{held}</td>' in queue
    assert f'action="/questions/{second}/claim"' not in queue
    assert f'action="/questions/{question_id}/claim"' in queue  # another resident's: free
    # Bolat's page of the second question offers no Claim: it says who will answer it.
    page_b = b.get(f"/questions/{second}").get_data(as_text=True)
    assert f'action="/questions/{second}/claim"' not in page_b
    assert f'<p class="hint" id="held-by">{held}</p>' in page_b
    refused = b.claim(second)
    assert refused.status_code == 409
    assert (f"Aigerim holds question {first} of the same resident and will answer question "
            f"{second} in the same call. Please choose another one.") in refused.get_data(
                as_text=True)
    # Aigerim's queue offers it to her, and her question's page says to take it too.
    mine = a.get("/queue").get_data(as_text=True)
    assert f"you hold question {first} of this resident" in mine
    assert f'action="/questions/{second}/claim"' in mine
    shown = a.get(f"/questions/{first}").get_data(as_text=True)
    assert 'id="also-waiting"' in shown
    assert f'action="/questions/{second}/claim"' in shown
    # Bolat, looking at the first question, is not offered the second.
    assert 'id="also-waiting"' not in b.get(f"/questions/{first}").get_data(as_text=True)
    taken = a.post(f"/questions/{second}/claim", {"csrf_token": a.token(f"/questions/{first}")})
    assert taken.status_code == 303
    with db() as session:
        a_id = session.scalars(select(User.id).where(User.email == "a@example.kz")).one()
        assert _state(session, second) == (QUESTION_CLAIMED, a_id)
    assert 'id="also-waiting"' not in a.get(f"/questions/{first}").get_data(as_text=True)


def test_the_refusal_speaks_the_users_language(app: Flask, question_id: int) -> None:
    _browser(app, "a@example.kz").claim(question_id)
    b = _browser(app, "b@example.kz")
    refused = b.client.post(f"/questions/{question_id}/claim", base_url=BASE_URL,
                            data={"csrf_token": b.token("/queue")},
                            headers={"Accept-Language": "ru", "Referer": f"{BASE_URL}/queue"})
    assert refused.status_code == 409
    assert f"Вопросом {question_id} уже занимается Aigerim." in refused.get_data(as_text=True)


def test_a_lapsed_claim_goes_to_the_next_consultant(app: Flask, db: Db,
                                                    question_id: int) -> None:
    assert _browser(app, "a@example.kz").claim(question_id).status_code == 303
    with db() as session:
        question = session.get(Question, question_id)
        assert question is not None and question.claim_touched_at is not None
        question.claim_touched_at -= timedelta(minutes=31)
    b = _browser(app, "b@example.kz")
    assert "Aigerim (idle)" in b.get("/queue?status=claimed").get_data(as_text=True)
    assert b.claim(question_id).status_code == 303
    assert _browser(app, "a@example.kz").claim(question_id).status_code == 409


def _logout(browser: Browser) -> str:
    """Press Log out; return the login page it leads to."""
    response = browser.post("/logout", {"csrf_token": browser.token("/queue")})
    assert response.status_code == 302
    assert response.headers["Location"] == "/login"
    return browser.get(response.headers["Location"]).get_data(as_text=True)


def test_logging_out_returns_the_held_questions_to_the_queue(app: Flask, db: Db,
                                                             question_id: int) -> None:
    """Aigerim logs out holding three questions: the two without a call going on are back in
    the queue at once (Bolat need not wait for the claims to lapse), each audited, and she is
    told which; the one on a call stays hers; Bolat's own claim is untouched."""
    with db() as session:
        other, on_call, bolats = _question(session), _question(session), _question(session)
    a, b = _browser(app, "a@example.kz"), _browser(app, "b@example.kz")
    for held in (question_id, other, on_call):
        assert a.claim(held).status_code == 303
    assert b.claim(bolats).status_code == 303
    with db() as session:
        a_id, b_id = (session.scalars(select(User.id).where(User.email == email)).one()
                      for email in ("a@example.kz", "b@example.kz"))
        now = datetime.now(UTC)
        session.add(CallbackAttempt(question_id=on_call, consultant_id=a_id,
                                    state=CALLBACK_CONNECTED, created_at=now, updated_at=now))

    login = _logout(a)
    assert (f"You are logged out. Questions {question_id}, {other}, which you held, are back "
            "in the queue.") in login
    with db() as session:
        assert _state(session, question_id) == (QUESTION_WAITING, None)
        assert _state(session, other) == (QUESTION_WAITING, None)
        assert _state(session, on_call) == (QUESTION_CLAIMED, a_id)
        assert _state(session, bolats) == (QUESTION_CLAIMED, b_id)
        released = [(e.user_id, e.question_id, e.detail) for e in session.scalars(
            select(AuditEvent).where(AuditEvent.action == "released").order_by(AuditEvent.id))]
        assert released == [(a_id, question_id, {"logged_out": True}),
                            (a_id, other, {"logged_out": True})]
    assert b.claim(question_id).status_code == 303
    coordinator = _browser(app, "c@example.kz")
    assert "on logging out" in coordinator.get(f"/admin/audit?question={other}").get_data(
        as_text=True)


def test_the_logout_message_speaks_the_users_language(app: Flask, db: Db,
                                                      question_id: int) -> None:
    a = _browser(app, "a@example.kz")
    a.get("/queue?lang=ru")  # remembered in a cookie, which outlives the session
    assert a.claim(question_id).status_code == 303
    assert (f"Вы вышли. Вопрос {question_id}, который был за вами, вернулся в очередь."
            in _logout(a))
    # Holding nothing, a logout says nothing about the queue.
    b = _browser(app, "b@example.kz")
    assert "back in the queue" not in _logout(b)
    with db() as session:
        assert _state(session, question_id) == (QUESTION_WAITING, None)


def test_a_logout_ends_the_session_when_the_database_fails(
        app: Flask, db: Db, question_id: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Returning the held questions is a courtesy: with the database locked or down, the
    logout still logs out (the claims lapse later, as they would have)."""
    from sqlalchemy.exc import OperationalError

    import hotline.auth

    a = _browser(app, "a@example.kz")
    assert a.claim(question_id).status_code == 303

    def locked(*_args: object) -> list[int]:
        raise OperationalError("UPDATE questions", {}, Exception("database is locked"))

    monkeypatch.setattr(hotline.auth, "release_claims_of", locked)
    assert "back in the queue" not in _logout(a)
    assert a.client.get("/queue", base_url=BASE_URL).status_code == 302  # to the login
    with db() as session:
        assert _state(session, question_id)[0] == QUESTION_CLAIMED


def test_a_coordinator_can_claim(app: Flask, question_id: int) -> None:
    assert _browser(app, "c@example.kz").claim(question_id).status_code == 303


def test_closed_and_missing_questions(app: Flask, db: Db, question_id: int) -> None:
    with db() as session:
        closed = _question(session, status=QUESTION_CLOSED)
    a = _browser(app, "a@example.kz")
    response = a.claim(closed)
    assert response.status_code == 409
    assert f"Question {closed} is closed already." in response.get_data(as_text=True)
    assert a.claim(999_999).status_code == 404


def test_a_logged_out_visitor_is_sent_to_login(app: Flask, db: Db, question_id: int) -> None:
    browser = Browser(app)
    response = browser.post(f"/questions/{question_id}/claim",
                            {"csrf_token": browser.token("/login")})
    assert response.status_code == 302
    assert response.headers["Location"] == "/login"
    # After logging in, the queue opens (not the form's address, which GET cannot open).
    login = browser.post("/login", {"csrf_token": browser.token("/login"),
                                    "email": "a@example.kz", "password": PASSWORD})
    assert login.headers["Location"] == "/queue"
    with db() as session:
        assert _state(session, question_id) == (QUESTION_WAITING, None)


def test_a_claim_without_a_csrf_token_is_refused(app: Flask, db: Db, question_id: int) -> None:
    a = _browser(app, "a@example.kz")
    assert a.post(f"/questions/{question_id}/claim", {}).status_code == 400
    assert a.post(f"/questions/{question_id}/claim",
                  {"csrf_token": "forged"}).status_code == 400
    with db() as session:
        assert _state(session, question_id) == (QUESTION_WAITING, None)


def test_claiming_needs_post(app: Flask, db: Db, question_id: int) -> None:
    """A GET (a link, a reload) claims nothing: it opens the question's page."""
    a = _browser(app, "a@example.kz")
    opened = a.get(f"/questions/{question_id}/claim")
    assert opened.status_code == 303
    assert opened.headers["Location"] == f"/questions/{question_id}"
    with db() as session:
        assert session.get(Question, question_id).claimed_by_id is None


def test_the_workers_sweep_gives_idle_claims_back(app: Flask, db: Db, question_id: int) -> None:
    from hotline.jobs import sweep
    from tests.support import runtime

    idle = runtime(app).settings.claim_idle_minutes
    long_ago = datetime.now(UTC) - timedelta(minutes=idle + 1)
    with db() as session:
        aigerim = session.scalars(select(User).where(User.email == "a@example.kz")).one().id
        assert claim_question(session, question_id, aigerim, long_ago,
                              lapse_before=long_ago - timedelta(minutes=idle))
    sweep(runtime(app))
    with db() as session:
        assert _state(session, question_id) == ("waiting", None)


def _postgres_only(session_factory: sessionmaker[Session]) -> None:
    if session_factory.kw["bind"].dialect.name != "postgresql":
        pytest.skip("row locks: SQLite's transactions are serial")


def test_a_claim_that_fails_leaves_the_row_unlocked(
        session_factory: sessionmaker[Session], people: tuple[int, int, int]) -> None:
    """Take-the-next tries many questions in one transaction: one it cannot take must not stay
    locked until it commits (a webhook or job writing that question would wait for it)."""
    _postgres_only(session_factory)
    a, b, question_id = people
    with unit_of_work(session_factory) as session:
        assert claim_question(session, question_id, a, NOW, NOW - IDLE)
    with unit_of_work(session_factory) as trying:
        assert not claim_question(trying, question_id, b, NOW, NOW - IDLE)
        # Still inside b's transaction: another connection writes the question at once.
        with unit_of_work(session_factory) as other:
            other.execute(text("SET LOCAL lock_timeout = '2s'"))
            other.execute(update(Question).where(Question.id == question_id)
                          .values(urgent=True))


def test_the_sweep_passes_over_a_claim_being_taken(
        session_factory: sessionmaker[Session], people: tuple[int, int, int]) -> None:
    """A row another transaction holds (a claim taking it over, a resident's other question)
    is passed over, not waited for: the sweep takes no caller's lock first, so waiting could
    deadlock with a claim; the next sweep returns it."""
    _postgres_only(session_factory)
    a, b, question_id = people
    with unit_of_work(session_factory) as session:
        other = _question(session)
        assert claim_question(session, question_id, a, NOW, NOW - IDLE)
        assert claim_question(session, other, a, NOW, NOW - IDLE)
    later = NOW + IDLE + timedelta(minutes=1)
    with unit_of_work(session_factory) as taking:
        assert claim_question(taking, question_id, b, later, later - IDLE)  # holds the row
        with unit_of_work(session_factory) as sweep:
            sweep.execute(text("SET LOCAL lock_timeout = '2s'"))
            assert lapse_claims(sweep, later - IDLE, later) == 1  # the other one only
    with unit_of_work(session_factory) as session:
        assert _state(session, question_id) == (QUESTION_CLAIMED, b)
        assert _state(session, other) == (QUESTION_WAITING, None)
