"""The callback queue: priority order, filters, counts, paging, and the /queue page."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import event, select, text
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.test import TestResponse

import storage.users
from hotline.config import Settings
from storage import audit, queue
from storage.calls import start_call, touch_caller
from storage.claims import REPEAT_TAKE_WINDOW, claim_question
from storage.db import unit_of_work
from storage.models import (
    CHANNEL_SMS,
    CHANNEL_VOICE,
    DOWNLOAD_DELETED,
    DOWNLOAD_FAILED,
    DOWNLOAD_STORED,
    QUESTION_CLAIMED,
    QUESTION_CLOSED,
    QUESTION_WAITING,
    TRANSCRIPTION_DONE,
    TRANSCRIPTION_FAILED,
    TRANSCRIPTION_NO_MODEL,
    AuditEvent,
    Caller,
    Question,
    Recording,
    User,
)
from storage.questions import record_question
from storage.queue import (
    UNSET,
    Cursor,
    QueueFilter,
    note_new_question,
    queue_counts,
    queue_page,
)
from storage.sms import add_sms_question, queue_outbound
from storage.transcripts import save_transcript
from tests.workspace_support import PASSWORD, Browser, Db, page

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # 14:00 in Almaty
ALMATY = timezone(timedelta(hours=5))
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


def _question(session: Session, *, ago: timedelta = HOUR, **fields: Any) -> int:
    """Add a question that arrived `ago` before NOW; its place comes from its reasons."""
    values: dict[str, Any] = {"channel": CHANNEL_VOICE, "language": "ru", "topic": "pension"}
    values.update(fields)
    question = Question(created_at=NOW - ago, **values)
    session.add(question)
    session.flush()
    return question.id


def _ids(session: Session, filters: QueueFilter, now: datetime = NOW,
         limit: int = 100) -> list[int]:
    return [q.id for q in queue_page(session, filters, now, limit=limit).questions]


def _user(session: Session, email: str = "a@example.kz", name: str = "Aigerim") -> int:
    user = User(email=email, name=name, role="consultant",
                password_hash=storage.users.hasher.hash(PASSWORD))
    session.add(user)
    session.flush()
    return user.id


# -- the order --------------------------------------------------------------------------------

def test_each_reason_moves_a_question_ahead(session_factory: sessionmaker[Session]) -> None:
    with unit_of_work(session_factory) as session:
        plain = _question(session, ago=3 * HOUR)
        urgent = _question(session, ago=HOUR, urgent=True)  # as if 7 days older
        repeat = _question(session, ago=2 * HOUR, repeat_caller=True)  # as if a day older
        # One failed attempt (as if 12 h older); its retry time has come.
        failed = _question(session, ago=HOUR / 2, callback_attempts=1,
                           next_callback_at=NOW - timedelta(minutes=1))
        # Waiting for its retry in an hour: not due until then.
        scheduled = _question(session, ago=5 * HOUR, callback_attempts=1,
                              next_callback_at=NOW + HOUR)
        ancient = _question(session, ago=10 * DAY)  # waited longer than any boost
        claimed = _question(session, ago=20 * DAY, status=QUESTION_CLAIMED)
        closed = _question(session, ago=30 * DAY, status=QUESTION_CLOSED)

    with unit_of_work(session_factory) as session:
        assert _ids(session, QueueFilter()) == [ancient, urgent, repeat, failed, plain]
        assert _ids(session, QueueFilter(status="scheduled")) == [scheduled]
        # Two hours later the retry is due, and its failed attempt puts it ahead of `failed`.
        later = NOW + 2 * HOUR
        assert _ids(session, QueueFilter(), later) == [ancient, urgent, repeat, scheduled,
                                                       failed, plain]
        assert _ids(session, QueueFilter(status="scheduled"), later) == []
        assert _ids(session, QueueFilter(status="claimed")) == [claimed]
        assert _ids(session, QueueFilter(status="open")) == [
            claimed, ancient, urgent, repeat, scheduled, failed, plain]
        assert _ids(session, QueueFilter(status="closed")) == [closed]


def test_reprioritise_follows_a_change_of_reasons(session_factory: sessionmaker[Session]) -> None:
    with unit_of_work(session_factory) as session:
        first = _question(session, ago=2 * HOUR)
        second = _question(session, ago=HOUR)
        assert _ids(session, QueueFilter()) == [first, second]
        question = session.get(Question, second)
        assert question is not None
        assert question.priority_at == NOW - HOUR  # a new question's place: its arrival
        question.urgent = True
        queue.reprioritise(question)
        session.flush()
        assert question.priority_at == NOW - HOUR - queue.URGENT_BOOST
        assert _ids(session, QueueFilter()) == [second, first]
        question.urgent = False
        question.callback_attempts = 3
        queue.reprioritise(question)
        assert question.priority_at == NOW - HOUR - 3 * queue.FAILED_ATTEMPT_BOOST


def test_a_repeat_caller_is_one_who_asked_within_90_days(
        session_factory: sessionmaker[Session]) -> None:
    with unit_of_work(session_factory) as session:
        caller = touch_caller(session, "+77011112233", NOW)
        stranger = touch_caller(session, "+77019998877", NOW)
        session.flush()
        long_ago = _question(session, ago=200 * DAY, caller_id=caller.id, status=QUESTION_CLOSED)
        first = add_sms_question(session, caller=caller, text="Пенсия?", language="ru",
                                 topic=None, now=NOW - 60 * DAY)
        assert not first.repeat_caller  # the question before it is older than 90 days
        assert first.priority_at == first.created_at
        closed = _question(session, ago=30 * DAY, caller_id=caller.id, status=QUESTION_CLOSED)
        # They ask again by SMS: a repeat; their open question moves ahead too.
        second = add_sms_question(session, caller=caller, text="Ещё вопрос", language="ru",
                                  topic=None, now=NOW)
        assert second.repeat_caller
        assert second.priority_at == NOW - queue.REPEAT_CALLER_BOOST
        assert first.repeat_caller
        assert first.priority_at == first.created_at - queue.REPEAT_CALLER_BOOST
        closed_question = session.get(Question, closed)
        assert closed_question is not None and not closed_question.repeat_caller
        old = session.get(Question, long_ago)
        assert old is not None and not old.repeat_caller
        # Another number is not a repeat.
        other = add_sms_question(session, caller=stranger, text="?", language="kk",
                                 topic=None, now=NOW)
        assert not other.repeat_caller and other.priority_at == NOW

        # A recorded question from the same caller's phone: a repeat as well.
        start_call(session, call_sid="CA" + "1" * 32, from_number="+77011112233",
                   to_number="+77000000000", now=NOW)
        voice, _recording, new = record_question(
            session, recording_sid="RE" + "1" * 32, call_sid="CA" + "1" * 32,
            recording_url="https://api.twilio.com/rec", duration=20, language="ru",
            topic="pension", now=NOW + HOUR)
        assert new and voice.repeat_caller
        assert voice.priority_at == NOW + HOUR - queue.REPEAT_CALLER_BOOST


def test_a_question_stored_late_with_its_older_time_is_linked_to_the_later_one(
        session_factory: sessionmaker[Session]) -> None:
    # The catch-up stores a lost recording after the resident's next question was stored.
    with unit_of_work(session_factory) as session:
        caller = touch_caller(session, "+77011112233", NOW)
        session.flush()
        later = add_sms_question(session, caller=caller, text="Пенсия?", language="ru",
                                 topic=None, now=NOW)
        assert not later.repeat_caller
        start_call(session, call_sid="CA" + "2" * 32, from_number="+77011112233",
                   to_number="+77000000000", now=NOW - 2 * HOUR)
        lost, _recording, new = record_question(
            session, recording_sid="RE" + "2" * 32, call_sid="CA" + "2" * 32,
            recording_url="https://api.twilio.com/rec", duration=20, language="ru",
            topic="pension", now=NOW - HOUR)
        assert new and lost.repeat_caller and later.repeat_caller
        assert lost.priority_at == NOW - HOUR - queue.REPEAT_CALLER_BOOST
        assert later.priority_at == NOW - queue.REPEAT_CALLER_BOOST
        # Beyond the window after it, another question is no repeat of it.
        start_call(session, call_sid="CA" + "3" * 32, from_number="+77011112233",
                   to_number="+77000000000", now=NOW - 100 * DAY)
        old, _recording, new = record_question(
            session, recording_sid="RE" + "3" * 32, call_sid="CA" + "3" * 32,
            recording_url="https://api.twilio.com/rec", duration=20, language="ru",
            topic="pension", now=NOW - 100 * DAY)
        assert new and not old.repeat_caller


def test_note_new_question_without_a_caller_only_places_it(
        session_factory: sessionmaker[Session]) -> None:
    with unit_of_work(session_factory) as session:
        question = Question(channel=CHANNEL_VOICE, created_at=NOW, urgent=True)
        note_new_question(session, question)
        assert not question.repeat_caller
        assert question.priority_at == NOW - queue.URGENT_BOOST


# -- filters and counts -----------------------------------------------------------------------

@pytest.fixture
def dataset(session_factory: sessionmaker[Session]) -> dict[str, int]:
    """Questions with known answers: name -> id."""
    with unit_of_work(session_factory) as session:
        holder = _user(session)
        ids = {
            "ru_pension_voice_almaty": _question(session, ago=9 * HOUR, region="almaty_region"),
            "ru_pension_sms_almaty": _question(session, ago=8 * HOUR, channel=CHANNEL_SMS,
                                               region="almaty_region"),
            "kk_pension_voice_turkistan": _question(session, ago=7 * HOUR, language="kk",
                                                    region="turkistan"),
            "kk_disability_voice_none": _question(session, ago=6 * HOUR, language="kk",
                                                  topic="disability"),
            "none_none_voice_none": _question(session, ago=5 * HOUR, language=None,
                                              topic=None),
            "kk_documents_sms_turkistan_scheduled": _question(
                session, ago=4 * HOUR, language="kk", topic="documents", channel=CHANNEL_SMS,
                region="turkistan", callback_attempts=1, next_callback_at=NOW + HOUR),
            "ru_disability_voice_almaty_claimed": _question(
                session, ago=3 * HOUR, topic="disability", region="almaty_region",
                status=QUESTION_CLAIMED, claimed_by_id=holder, claimed_at=NOW,
                claim_touched_at=NOW),
            "ru_pension_voice_almaty_closed": _question(
                session, ago=10 * DAY, region="almaty_region", status=QUESTION_CLOSED,
                closed_at=NOW - 9 * DAY, close_reason="resolved"),
            "kk_pension_sms_none_closed": _question(
                session, ago=20 * DAY, language="kk", channel=CHANNEL_SMS,
                status=QUESTION_CLOSED, closed_at=NOW - 19 * DAY, close_reason="silence"),
        }
    return ids


def _names(ids: dict[str, int], found: list[int]) -> list[str]:
    names = {v: k for k, v in ids.items()}
    return [names[i] for i in found]


@pytest.mark.parametrize(("filters", "expected"), [
    (QueueFilter(), ["ru_pension_voice_almaty", "ru_pension_sms_almaty",
                     "kk_pension_voice_turkistan", "kk_disability_voice_none",
                     "none_none_voice_none"]),
    (QueueFilter(language="kk"), ["kk_pension_voice_turkistan", "kk_disability_voice_none"]),
    (QueueFilter(language=UNSET), ["none_none_voice_none"]),
    (QueueFilter(topic="pension"), ["ru_pension_voice_almaty", "ru_pension_sms_almaty",
                                    "kk_pension_voice_turkistan"]),
    (QueueFilter(topic=UNSET), ["none_none_voice_none"]),
    (QueueFilter(channel=CHANNEL_SMS), ["ru_pension_sms_almaty"]),
    (QueueFilter(region="almaty_region"), ["ru_pension_voice_almaty", "ru_pension_sms_almaty"]),
    (QueueFilter(region=UNSET), ["kk_disability_voice_none", "none_none_voice_none"]),
    (QueueFilter(language="ru", channel=CHANNEL_VOICE, region="almaty_region"),
     ["ru_pension_voice_almaty"]),
    (QueueFilter(language="en"), []),
    (QueueFilter(status="scheduled"), ["kk_documents_sms_turkistan_scheduled"]),
    (QueueFilter(status="scheduled", channel=CHANNEL_VOICE), []),
    (QueueFilter(status="claimed"), ["ru_disability_voice_almaty_claimed"]),
    (QueueFilter(status="open", region="almaty_region"),
     ["ru_pension_voice_almaty", "ru_pension_sms_almaty", "ru_disability_voice_almaty_claimed"]),
    (QueueFilter(status="closed"), ["ru_pension_voice_almaty_closed",
                                    "kk_pension_sms_none_closed"]),
    (QueueFilter(status="closed", language="kk"), ["kk_pension_sms_none_closed"]),
    (QueueFilter(status="closed", region=UNSET), ["kk_pension_sms_none_closed"]),
])
def test_every_filter(session_factory: sessionmaker[Session], dataset: dict[str, int],
                      filters: QueueFilter, expected: list[str]) -> None:
    with unit_of_work(session_factory) as session:
        assert _names(dataset, _ids(session, filters)) == expected


def test_an_unknown_status_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown queue status"):
        QueueFilter(status="everything")


def test_counts_without_filters(session_factory: sessionmaker[Session],
                                dataset: dict[str, int]) -> None:
    with unit_of_work(session_factory) as session:
        counts = queue_counts(session, QueueFilter(), NOW)
    assert counts.statuses == {"due": 5, "scheduled": 1, "claimed": 1, "open": 7, "closed": 2}
    # The facets count the open questions (due, scheduled and claimed).
    assert counts.facets == {
        "language": {"ru": 3, "kk": 3, None: 1},
        "topic": {"pension": 3, "disability": 2, "documents": 1, None: 1},
        "channel": {CHANNEL_VOICE: 5, CHANNEL_SMS: 2},
        "region": {"almaty_region": 3, "turkistan": 2, None: 2},
    }
    # Two hours later the scheduled retry is due.
    with unit_of_work(session_factory) as session:
        later = queue_counts(session, QueueFilter(), NOW + 2 * HOUR)
    assert later.statuses == {"due": 6, "scheduled": 0, "claimed": 1, "open": 7, "closed": 2}


def test_counts_with_filters_leave_out_each_facets_own_filter(
        session_factory: sessionmaker[Session], dataset: dict[str, int]) -> None:
    with unit_of_work(session_factory) as session:
        counts = queue_counts(session, QueueFilter(language="ru", status="closed"), NOW)
        both = queue_counts(session, QueueFilter(language="kk", region="turkistan"),
                            NOW)
        unset = queue_counts(session, QueueFilter(region=UNSET), NOW)
    # Status tabs: every filter applies (the status itself does not change the counts).
    assert counts.statuses == {"due": 2, "scheduled": 0, "claimed": 1, "open": 3, "closed": 1}
    # language's own choices: all languages (what choosing another one would give) ...
    assert counts.facets["language"] == {"ru": 3, "kk": 3, None: 1}
    # ... every other facet: the Russian open questions only.
    assert counts.facets["topic"] == {"pension": 2, "disability": 1}
    assert counts.facets["channel"] == {CHANNEL_VOICE: 2, CHANNEL_SMS: 1}
    assert counts.facets["region"] == {"almaty_region": 3}

    assert both.statuses == {"due": 1, "scheduled": 1, "claimed": 0, "open": 2, "closed": 0}
    assert both.facets["language"] == {"kk": 2}  # Turkistan's open questions
    assert both.facets["region"] == {"turkistan": 2, None: 1}  # Kazakh ones
    assert both.facets["topic"] == {"pension": 1, "documents": 1}

    assert unset.statuses == {"due": 2, "scheduled": 0, "claimed": 0, "open": 2, "closed": 1}
    assert unset.facets["language"] == {"kk": 1, None: 1}


# -- paging -----------------------------------------------------------------------------------

def test_keyset_paging_goes_through_every_question_once(
        session_factory: sessionmaker[Session]) -> None:
    with unit_of_work(session_factory) as session:
        # Equal arrival times on purpose: the id breaks the tie.
        expected = [_question(session, ago=HOUR * (n // 2)) for n in range(7, 0, -1)]
    seen: list[int] = []
    after: Cursor | None = None
    pages = 0
    with unit_of_work(session_factory) as session:
        while True:
            found = queue_page(session, QueueFilter(), NOW, after=after, limit=3)
            seen += [q.id for q in found.questions]
            pages += 1
            if found.next is None:
                break
            after = Cursor.decode(found.next.encode())  # through the URL and back
    assert pages == 3
    assert sorted(seen) == sorted(expected) and len(seen) == 7
    with unit_of_work(session_factory) as session:
        assert seen == _ids(session, QueueFilter())  # the order of one long page


def test_closed_pages_go_newest_closing_first_then_those_without_a_time(
        session_factory: sessionmaker[Session]) -> None:
    with unit_of_work(session_factory) as session:
        old = _question(session, status=QUESTION_CLOSED, closed_at=NOW - 3 * DAY)
        new = _question(session, status=QUESTION_CLOSED, closed_at=NOW - DAY)
        tie_a = _question(session, status=QUESTION_CLOSED, closed_at=NOW - 2 * DAY)
        tie_b = _question(session, status=QUESTION_CLOSED, closed_at=NOW - 2 * DAY)
        untimed_a = _question(session, status=QUESTION_CLOSED)
        untimed_b = _question(session, status=QUESTION_CLOSED)
    expected = [new, tie_b, tie_a, old, untimed_b, untimed_a]
    for limit in (1, 2, 4, 10):
        seen: list[int] = []
        after: Cursor | None = None
        with unit_of_work(session_factory) as session:
            while True:
                found = queue_page(session, QueueFilter(status="closed"), NOW, after=after,
                                   limit=limit)
                seen += [q.id for q in found.questions]
                if found.next is None:
                    break
                after = Cursor.decode(found.next.encode())
        assert seen == expected, limit


def test_cursors_survive_the_url_and_bad_ones_are_ignored() -> None:
    cursor = Cursor(datetime(2026, 3, 2, 4, 30, 1, 123456, tzinfo=UTC), 42)
    assert Cursor.decode(cursor.encode()) == cursor
    assert Cursor.decode(Cursor(None, 7).encode()) == Cursor(None, 7)
    for bad in (None, "", "x", "12", "abc.1", "1.x", "9" * 40 + ".1"):
        assert Cursor.decode(bad) is None


# -- the plans: indexes, not scans ------------------------------------------------------------

def _statements(session: Session, run: Any) -> list[tuple[str, Any]]:
    seen: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any,
                _many: bool) -> None:
        if "FROM questions" in statement:
            seen.append((statement, parameters))

    engine = session.get_bind()
    event.listen(engine, "before_cursor_execute", capture)
    try:
        run()
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    return seen


def test_the_queries_use_the_indexes(session_factory: sessionmaker[Session],
                                     dataset: dict[str, int]) -> None:
    with unit_of_work(session_factory) as session:
        filters = QueueFilter(language="ru", topic="pension")
        statements = _statements(session, lambda: (
            queue_page(session, QueueFilter(), NOW), queue_counts(session, filters, NOW),
            queue_page(session, QueueFilter(status="closed"), NOW),
            queue_page(session, QueueFilter(status="closed", region="almaty_region"), NOW)))
        # due page, open groups, closed count, closed page x2, filtered closed page x2
        assert len(statements) == 7
        sqlite = session.get_bind().dialect.name == "sqlite"
        if not sqlite:
            # A few rows: PostgreSQL would rightly read the table; make it show its index plan.
            session.execute(text("SET LOCAL enable_seqscan = off"))
            session.execute(text("SET LOCAL enable_bitmapscan = off"))
        plans = []
        for statement, parameters in statements:
            prefix = "EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN "
            rows = session.connection().exec_driver_sql(prefix + statement, parameters).all()
            plans.append(" | ".join(str(row[-1]) for row in rows))
    due, groups, closed_count, closed_page, _untimed, region_closed = plans[:6]
    for plan in plans:
        assert "SCAN questions" not in plan and "Seq Scan" not in plan, plan
    # The due page reads the priority index in its order: no sorting.
    assert "ix_questions_status_priority_at" in due
    assert "TEMP B-TREE" not in due and "Sort" not in due
    if sqlite:  # (PostgreSQL's choice among indexes depends on its statistics)
        # The counts read the covering index only; the closed tab reads closing times backwards.
        assert "COVERING INDEX ix_questions_queue_counts" in groups
        assert "COVERING INDEX ix_questions_queue_counts" in closed_count
        assert "ix_questions_status_closed_at" in closed_page
        # Filtered by a value: that value's closed questions, in closing order, from its index.
        assert "ix_questions_region_status_closed_at" in region_closed
        assert "TEMP B-TREE" not in region_closed


# -- the page ---------------------------------------------------------------------------------

@pytest.fixture
def at_now(monkeypatch: pytest.MonkeyPatch) -> datetime:
    """The queue page's clock, stopped at NOW."""
    monkeypatch.setattr("hotline.queue_page.utcnow", lambda: NOW)
    return NOW


def _logged_in(app: Flask, email: str) -> Browser:
    browser = Browser(app)
    assert browser.login(email).status_code == 302
    return browser


def test_a_logged_out_visitor_is_sent_to_login(app: Flask) -> None:
    for path in ("/queue", "/queue?status=closed&language=ru"):
        response = Browser(app).get(path)
        assert response.status_code == 302
        assert response.headers["Location"] == "/login"


def test_consultants_and_coordinators_see_the_queue(app: Flask, db: Db, consultant: str,
                                                    coordinator: str, at_now: datetime) -> None:
    with db() as session:
        waiting = _question(session, ago=3 * HOUR)
    for email in (consultant, coordinator):
        response = _logged_in(app, email).get("/queue")
        assert response.status_code == 200
        assert f'<tr id="question-{waiting}">' in response.get_data(as_text=True)


def test_each_row_shows_the_start_of_what_was_asked(app: Flask, db: Db, consultant: str,
                                                   at_now: datetime) -> None:
    """A consultant sees what each question is about before opening it: the SMS, the
    corrected transcript, else Vosk's; one line (a word cut with "…"), in its language."""
    sms_text = ("Здравствуйте! Мне 63 года, пенсию назначили, но без стажа в колхозе с 1985 по "
                "1991 год, трудовая книжка потерялась. Куда обращаться?")
    with db() as session:
        sms = _question(session, ago=5 * HOUR, channel=CHANNEL_SMS, text=sms_text)
        heard = _question(session, ago=4 * HOUR, language="kk",
                          transcription_state=TRANSCRIPTION_DONE)
        save_transcript(session, heard, language="kk", model="vosk-model-kz", text="жер  телімі "
                        "туралы  сұрағым бар", words=[], confidence=0.8, duration=3.0,
                        elapsed=1.0, now=NOW)
        corrected = _question(session, ago=3 * HOUR, transcription_state=TRANSCRIPTION_DONE,
                              corrected_text="Когда придёт пособие на ребёнка?")
        save_transcript(session, corrected, language="ru", model="vosk-model-ru",
                        text="когда придёт пособие на ребёнка", words=[], confidence=0.5,
                        duration=3.0, elapsed=1.0, now=NOW)
        silent = _question(session, ago=2 * HOUR, transcription_state=TRANSCRIPTION_DONE)
        save_transcript(session, silent, language="ru", model="vosk-model-ru", text="",
                        words=[], confidence=0.0, duration=3.0, elapsed=1.0, now=NOW)
        session.add(Recording(recording_sid="RE" + "1" * 32, question_id=silent, call_sid="CA1",
                              duration=3, source_url="https://x/rec", file_path="r.wav",
                              download_state=DOWNLOAD_STORED))
        # Its recording gone (retention deleted it, or it was never fetched): nothing to hear.
        gone = _question(session, ago=HOUR + HOUR / 2, transcription_state=TRANSCRIPTION_DONE)
        save_transcript(session, gone, language="ru", model="vosk-model-ru", text="",
                        words=[], confidence=0.0, duration=3.0, elapsed=1.0, now=NOW)
        session.add(Recording(recording_sid="RE" + "2" * 32, question_id=gone, call_sid="CA1",
                              duration=3, source_url="https://x/rec", file_path=None,
                              download_state=DOWNLOAD_DELETED))
        failed = _question(session, ago=1 * HOUR, transcription_state=TRANSCRIPTION_FAILED)
    response = _logged_in(app, consultant).get("/queue")
    shown = {int(row[0]): row[7] for row in page(response).rows[1:]}
    assert shown == {
        sms: "Здравствуйте! Мне 63 года, пенсию назначили, но без стажа в колхозе с 1985 по "
             "1991 год…",
        heard: "жер телімі туралы сұрағым бар",
        corrected: "Когда придёт пособие на ребёнка?",
        # Recognised nothing (silence): said so, not the bare state "done", which read as if
        # the question were handled.
        silent: "No words recognised: listen to the recording",
        gone: "No words recognised",
        failed: "failed",
    }
    assert '<span lang="kk">жер телімі туралы сұрағым бар</span>' in response.get_data(
        as_text=True)
    russian = page(_logged_in(app, consultant).get("/queue?lang=ru")).rows[1:]
    assert {int(row[0]): row[7] for row in russian}[silent] == (
        "Слова не распознаны: прослушайте запись")


def test_a_call_no_speech_model_could_transcribe_sends_the_lawyer_to_the_recording(
        app: Flask, db: Db, consultant: str, at_now: datetime) -> None:
    """No speech model on this machine for the question's language: the row says the call was
    not transcribed and to listen to the recording, with its length; not "no model"."""

    def unheard(ago: timedelta, seconds: int | None, state: str = DOWNLOAD_STORED) -> int:
        with db() as session:
            question_id = _question(session, ago=ago, language="kk",
                                    transcription_state=TRANSCRIPTION_NO_MODEL)
            session.add(Recording(recording_sid=f"RE{question_id:032d}", question_id=question_id,
                                  call_sid="CA1", duration=seconds, source_url="https://x/rec",
                                  file_path="r.wav" if state == DOWNLOAD_STORED else None,
                                  download_state=state))
            return question_id

    timed = unheard(3 * HOUR, 95)
    untimed = unheard(2 * HOUR, None)
    lost = unheard(HOUR, 40, DOWNLOAD_FAILED)  # no audio to listen to either
    browser = _logged_in(app, consultant)
    expected = {
        "en": ("Not transcribed (no speech model here): listen to the recording (1:35)",
               "Not transcribed (no speech model here): listen to the recording",
               "Not transcribed (no speech model here)"),
        "ru": ("Не расшифровано (здесь нет речевой модели): прослушайте запись (1:35)",
               "Не расшифровано (здесь нет речевой модели): прослушайте запись",
               "Не расшифровано (здесь нет речевой модели)"),
        "kk": ("Мәтінге айналдырылмады (мұнда сөйлеу моделі жоқ): жазбаны тыңдаңыз (1:35)",
               "Мәтінге айналдырылмады (мұнда сөйлеу моделі жоқ): жазбаны тыңдаңыз",
               "Мәтінге айналдырылмады (мұнда сөйлеу моделі жоқ)"),
    }
    for language, (first, second, third) in expected.items():
        rows = page(browser.get(f"/queue?lang={language}")).rows[1:]
        assert {int(row[0]): row[7] for row in rows} == {
            timed: first, untimed: second, lost: third}, language


def test_the_page_shows_rows_badges_tabs_and_filters(app: Flask, db: Db, consultant: str,
                                                     at_now: datetime) -> None:
    with db() as session:
        holder = _user(session, "b@example.kz", "Bolat")
        urgent = _question(session, ago=3 * HOUR, urgent=True, repeat_caller=True,
                           callback_attempts=2, region="almaty_region",
                           next_callback_at=NOW - HOUR)
        sms = _question(session, ago=3 * DAY, channel=CHANNEL_SMS, language="kk",
                        topic="documents")
        scheduled = _question(session, ago=50 * HOUR, callback_attempts=1,
                              next_callback_at=NOW + 2 * HOUR + timedelta(minutes=5))
        claimed = _question(session, ago=10 * HOUR, status=QUESTION_CLAIMED,
                            claimed_by_id=holder, claimed_at=NOW, claim_touched_at=NOW)
        _question(session, ago=40 * DAY, status=QUESTION_CLOSED, closed_at=NOW - 39 * DAY,
                  close_reason="wrong_number")
    browser = _logged_in(app, consultant)

    due = browser.get("/queue")
    header, *rows = page(due).rows
    assert header == ["#", "Waiting", "Priority", "Language", "Topic", "Channel", "Region",
                      "What they asked", "Claimed by", ""]
    assert rows == [
        [str(urgent), "3 h", "urgent repeat caller 2 failed attempts", "Русский", "Pensions",
         "Call", "Almaty Region", "waiting", "—", "Claim"],
        [str(sms), "3 d", "", "Қазақша", "Documents and public services", "SMS", "no region",
         "—", "—", "Claim"],
    ]
    html = due.get_data(as_text=True)
    assert f'<tr id="question-{urgent}">' in html
    assert f'<form class="claim" method="post" action="/questions/{urgent}/claim">' in html
    assert f'href="/questions/{urgent}"' in html
    # The tabs with their counts, and the filters' choices with theirs.
    for tab in ('Due now <span class="count">2</span>', 'Retry later <span class="count">1</span>',
                'Claimed <span class="count">1</span>', 'All open <span class="count">4</span>',
                'Closed <span class="count">1</span>'):
        assert tab in html
    assert '<option value="ru">Русский (3)</option>' in html
    assert '<option value="kk">Қазақша (1)</option>' in html
    assert '<option value="-">no region (3)</option>' in html
    assert '<option value="" selected>all (4)</option>' in html

    later = page(browser.get("/queue?status=scheduled")).rows[1:]
    assert later == [[str(scheduled), "2 d", "1 failed attempt retry at 16:05", "Русский",
                      "Pensions", "Call", "no region", "waiting", "—", "Claim"]]
    held = page(browser.get("/queue?status=claimed")).rows[1:]
    assert held == [[str(claimed), "10 h", "", "Русский", "Pensions", "Call", "no region",
                     "waiting", "Bolat", ""]]
    closed_page = browser.get("/queue?status=closed")
    closed_header, closed_row = page(closed_page).rows
    assert closed_header[1] == "Closed (Almaty)"
    assert closed_row[1:3] == ["2026-01-22 14:00", "wrong number"]
    assert closed_row[-1] == ""  # no Claim button


def test_the_queue_shows_which_promised_callbacks_run_out(app: Flask, db: Db, consultant: str,
                                                          at_now: datetime) -> None:
    """A lawyer's call is promised within HOTLINE_CALLBACK_DAYS (3) working days: NOW is
    Monday 2 March, 14:00 in Almaty."""

    def asked(at: datetime, phone: str, **fields: Any) -> int:
        with db() as session:
            caller = touch_caller(session, phone, NOW)
            return _question(session, ago=NOW - at, caller_id=caller.id, **fields)

    today = asked(datetime(2026, 2, 25, 10, 0, tzinfo=ALMATY), "+77011110001")
    # Wednesday 01:30 in Almaty is still Tuesday in UTC: the days are Almaty's.
    early = asked(datetime(2026, 2, 25, 1, 30, tzinfo=ALMATY), "+77011110002")
    late = asked(datetime(2026, 2, 24, 23, 30, tzinfo=ALMATY), "+77011110003")
    tried = asked(datetime(2026, 2, 24, 12, 0, tzinfo=ALMATY), "+77011110004",
                  first_callback_at=NOW - 2 * DAY, callback_attempts=1)
    by_sms = asked(datetime(2026, 2, 24, 12, 0, tzinfo=ALMATY), "+77011110005",
                   channel=CHANNEL_SMS)
    fresh = asked(NOW - DAY, "+77011110006")
    with db() as session:
        hidden = _question(session, ago=NOW - datetime(2026, 2, 24, 12, 0, tzinfo=ALMATY))
        consultant_id = session.scalars(select(User.id).where(User.email == consultant)).one()
        answer = queue_outbound(session, phone="+77011110005", body="Обратитесь в ЦОН",
                                language="ru", caller=None, question_id=by_sms,
                                encoding="UCS-2", segments=1, now=NOW - DAY)
        answer.sent_by_id = consultant_id
    badges = {int(row[0]): row[2] for row in page(_logged_in(app, consultant).get(
        "/queue?status=open")).rows[1:]}
    # Wednesday's questions: by the end of Monday (Thursday, Friday, Monday).
    assert badges[today] == badges[early] == "promised by today"
    # Tuesday's, just before midnight: by the end of Friday, passed.
    assert badges[late] == "promised by 27.02"
    # A call was tried (no answer): the promise was kept; the attempt shows instead.
    assert badges[tried] == "1 failed attempt"
    # Answered by SMS; a hidden number was promised nothing; a day old is not due yet.
    assert badges[by_sms] == badges[hidden] == badges[fresh] == ""


def test_the_promise_counts_kazakhstan_s_public_holidays(
        app: Flask, make_app: Callable[[Settings], Flask], settings: Settings, db: Db,
        consultant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nauryz: 21-23 March 2026, and Saturday's and Sunday's days off moved to Tuesday 24 and
    Wednesday 25. On Thursday 26 March, 14:00 in Almaty, the questions of Friday 20 and
    Monday 23 March are due on Monday 30 by Kazakhstan's calendar (the default); counted
    Monday to Friday (HOTLINE_HOLIDAYS=none) one was due on Wednesday and one today."""
    monkeypatch.setattr("hotline.queue_page.utcnow",
                        lambda: datetime(2026, 3, 26, 9, 0, tzinfo=UTC))

    def asked(at: datetime, phone: str) -> int:
        with db() as session:
            caller = touch_caller(session, phone, NOW)
            return _question(session, ago=NOW - at, caller_id=caller.id)

    friday = asked(datetime(2026, 3, 20, 10, 0, tzinfo=ALMATY), "+77011110001")
    monday = asked(datetime(2026, 3, 23, 10, 0, tzinfo=ALMATY), "+77011110002")

    def badges(application: Flask) -> dict[int, str]:
        rows = page(_logged_in(application, consultant).get("/queue?status=open")).rows[1:]
        return {int(row[0]): row[2] for row in rows}

    assert badges(app) == {friday: "", monday: ""}
    weekdays = make_app(settings.override(holidays=None))  # the same database
    assert badges(weekdays) == {friday: "promised by 25.03", monday: "promised by today"}


def test_the_page_filters_by_the_address(app: Flask, db: Db, consultant: str,
                                         at_now: datetime) -> None:
    with db() as session:
        ru = _question(session, ago=2 * HOUR, region="almaty_region")
        kk = _question(session, ago=HOUR, language="kk", region="almaty_region")
        third = _question(session, ago=HOUR, language="kk", topic="disability")
    browser = _logged_in(app, consultant)
    filtered = browser.get("/queue?language=kk&region=almaty_region")
    assert [row[0] for row in page(filtered).rows[1:]] == [str(kk)]
    html = filtered.get_data(as_text=True)
    assert '<option value="kk" selected>Қазақша (1)</option>' in html
    assert '<option value="almaty_region" selected>Almaty Region (1)</option>' in html
    assert 'Clear filters' in html
    # The status tabs keep the filters.
    assert 'href="/queue?status=closed&amp;language=kk&amp;region=almaty_region"' in html
    nothing = browser.get("/queue?language=en")
    assert page(nothing).rows == []
    assert "No question matches these filters." in nothing.get_data(as_text=True)
    # Unknown statuses and broken cursors fall back to the first page of the due tab.
    odd = browser.get("/queue?status=everything&after=garbage")
    assert odd.status_code == 200
    assert [row[0] for row in page(odd).rows[1:]] == [str(ru), str(kk), str(third)]
    # A cursor whose id no question can have (the drivers refused it in the query: a 500).
    for cursor in ("0.99999999999", "n.999999999999999999999999", "0.0", "5.-3"):
        huge = browser.get(f"/queue?after={cursor}")
        assert huge.status_code == 200, cursor
        assert [row[0] for row in page(huge).rows[1:]] == [str(ru), str(kk), str(third)]


def test_the_region_filter_is_in_the_order_of_the_pages_alphabet(
        app: Flask, db: Db, consultant: str, at_now: datetime) -> None:
    """The cities first, then in the alphabet of the page's language (Ақмола before Атырау,
    Қарағанды before Ұлытау, not after every Russian letter), by the name's own word in
    Russian; the questions without a region last."""
    with db() as session:
        for region in ("ulytau", "atyrau", "karaganda", "akmola", "abai", "almaty", None):
            _question(session, region=region)
    browser = _logged_in(app, consultant)

    def regions(language: str) -> list[str]:
        html = browser.get(f"/queue?lang={language}").get_data(as_text=True)
        select_html = html.split('id="filter-region">', 1)[1].split("</select>")[0]
        return re.findall(r'<option value="[^"]+">([^<(]+) \(1\)</option>', select_html)

    assert regions("kk") == ["Алматы қаласы", "Абай облысы", "Ақмола облысы", "Атырау облысы",
                             "Қарағанды облысы", "Ұлытау облысы", "өңірі жоқ"]
    assert regions("ru") == ["город Алматы", "область Абай", "Акмолинская область",
                             "Атырауская область", "Карагандинская область",
                             "область Ұлытау", "без региона"]


def test_the_page_has_a_next_page(app: Flask, db: Db, consultant: str, at_now: datetime,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("hotline.queue_page.PAGE_SIZE", 2)
    with db() as session:
        ids = [_question(session, ago=(10 - n) * HOUR, language="kk") for n in range(5)]
    browser = _logged_in(app, consultant)
    seen: list[str] = []
    path: str | None = "/queue?language=kk"
    while path:
        response = browser.get(path)
        html = response.get_data(as_text=True)
        seen += [row[0] for row in page(response).rows[1:]]
        # (the language links keep the query too: not the next page)
        links = [link for link in page(response).links if "after=" in link
                 and "lang=" not in link]
        path = links[0].replace("&amp;", "&") if links else None
        if path:
            assert "language=kk" in path
            assert "Next page" in html
    assert seen == [str(i) for i in ids]


def test_claiming_opens_the_question_and_is_audited(app: Flask, db: Db, consultant: str,
                                                    at_now: datetime) -> None:
    with db() as session:
        question_id = _question(session)
    browser = _logged_in(app, consultant)
    response = browser.post(f"/questions/{question_id}/claim",
                            {"csrf_token": browser.token("/queue")})
    assert response.status_code == 303
    assert response.headers["Location"] == f"/questions/{question_id}"
    with db() as session:
        question = session.get(Question, question_id)
        assert question is not None and question.status == QUESTION_CLAIMED
        [claimed] = session.scalars(select(AuditEvent).where(
            AuditEvent.action != audit.ACCOUNT)).all()  # (the accounts made by the fixtures)
        assert (claimed.action, claimed.question_id, claimed.user_id, claimed.ip) == (
            audit.CLAIMED, question_id, question.claimed_by_id, browser.ip)
    # Claimed again (a double click, another tab): it opens; the log says "claimed" once.
    again = browser.post(f"/questions/{question_id}/claim",
                         {"csrf_token": browser.token("/queue")})
    assert again.headers["Location"] == f"/questions/{question_id}"
    with db() as session:
        assert len(session.scalars(select(AuditEvent).where(
            AuditEvent.action == audit.CLAIMED)).all()) == 1
    # It leaves the due tab and shows under "claimed", held by "you".
    assert page(browser.get("/queue")).rows == []
    assert page(browser.get("/queue?status=claimed")).rows[1][8] == "you"


def test_the_page_speaks_russian_and_kazakh(app: Flask, db: Db, consultant: str,
                                            at_now: datetime) -> None:
    with db() as session:
        _question(session, ago=3 * DAY, urgent=True, callback_attempts=5)
    browser = _logged_in(app, consultant)
    russian = page(browser.get("/queue?lang=ru")).rows[1]
    assert russian[1:3] == ["3 дн.", "срочно 5 неудачных попыток"]
    kazakh = page(browser.get("/queue?lang=kk")).rows[1]
    assert kazakh[1:3] == ["3 күн", "шұғыл 5 сәтсіз әрекет"]


def test_a_question_sent_back_for_follow_up_says_where_the_resident_was_referred(
        app: Flask, db: Db, consultant: str, at_now: datetime) -> None:
    """A lawyer wrote "needs follow-up" with a referral: back in the queue, the question says
    so, with the referral's start, rather than looking like one nobody has answered."""
    referral = "ЦОН Туркестан, отдел пенсий, окно 5, +7 725 333 44 55, спросить Айгуль"
    with db() as session:
        followed = _question(session, ago=2 * DAY, referral=referral,
                             first_callback_at=NOW - DAY)
        fresh = _question(session, ago=DAY)
        closed = _question(session, ago=3 * DAY, status=QUESTION_CLOSED, closed_at=NOW - DAY,
                           close_reason="resolved", referral=referral)
    browser = _logged_in(app, consultant)
    badges = {int(row[0]): row[2] for row in page(browser.get("/queue")).rows[1:]}
    assert badges == {
        followed: "follow-up: referred to ЦОН Туркестан, отдел пенсий, окно 5, +7…", fresh: ""}
    html = browser.get("/queue").get_data(as_text=True)
    assert '<span class="badge follow-up">follow-up: referred to ЦОН' in html
    russian = {int(row[0]): row[2] for row in page(browser.get("/queue?lang=ru")).rows[1:]}
    assert russian[followed] == ("нужно продолжить; направлен: ЦОН Туркестан, отдел пенсий, "
                                 "окно 5, +7…")
    kazakh = {int(row[0]): row[2] for row in page(browser.get("/queue?lang=kk")).rows[1:]}
    assert kazakh[followed] == ("әрі қарай көмек; жіберілген жері: ЦОН Туркестан, отдел "
                                "пенсий, окно 5, +7…")
    # A closed one says only why it was closed.
    closed_rows = page(browser.get("/queue?status=closed&lang=en")).rows[1:]
    assert [(int(row[0]), row[2]) for row in closed_rows] == [(closed, "resolved")]


def test_the_due_tab_is_named_for_calls_and_sms_alike(app: Flask, db: Db, consultant: str,
                                                     at_now: datetime) -> None:
    """"Due now" holds SMS questions too: its Kazakh and Russian names say "waiting for an
    answer", not "waiting for a call"."""
    with db() as session:
        _question(session, channel=CHANNEL_SMS, text="Пенсия?")
    browser = _logged_in(app, consultant)
    for language, name in (("kk", "Жауап күтуде"), ("ru", "Ждут ответа"), ("en", "Due now")):
        html = browser.get(f"/queue?lang={language}").get_data(as_text=True)
        assert (f'<a href="/queue" class="tab-due" aria-current="page">{name} '
                '<span class="count">1</span></a>') in html, language


def test_the_question_pages_redirects_leave_a_notice(app: Flask, consultant: str) -> None:
    browser = _logged_in(app, consultant)
    released = browser.get("/queue?released=12").get_data(as_text=True)
    assert '<p class="notice" role="status">Question 12 is back in the queue.</p>' in released
    closed = browser.get("/queue?closed=12&lang=ru").get_data(as_text=True)
    assert "Вопрос 12 закрыт." in closed
    # In Kazakh the number is marked as one ("№12 сұрағы"): "12 сұрағы" reads as a count.
    assert "№12 сұрағы жабылды." in browser.get("/queue?closed=12&lang=kk").get_data(
        as_text=True)
    assert 'class="notice"' not in browser.get("/queue?closed=x").get_data(as_text=True)


# -- take the next question ------------------------------------------------------------------

def _take_next(browser: Browser, **filters: str) -> TestResponse:
    return browser.post("/queue/next", {"csrf_token": browser.token("/queue"), **filters})


def _take_and_open(browser: Browser, **filters: str) -> str:
    """Take the next question and follow the redirect as a browser does; return where it led.
    Opening the question touches its claim: the next take is a new one, not a repeat of this
    one (test_take_next_twice_in_a_row_claims_once)."""
    location = _take_next(browser, **filters).headers["Location"]
    if location.startswith("/questions/"):
        assert browser.get(location).status_code == 200
    return str(location)


def test_take_next_claims_the_first_due_question_one_may_take(
        app: Flask, db: Db, consultant: str, coordinator: str, at_now: datetime) -> None:
    with db() as session:
        other = _user(session, "b@example.kz", "Bolat")
        resident = Caller(phone="+77011234567")
        session.add(resident)
        session.flush()
        plain = _question(session, ago=5 * DAY)
        urgent = _question(session, ago=HOUR, urgent=True)  # 7 days ahead: first
        # Second in the order, but its resident's other question is Bolat's.
        held_resident = _question(session, ago=6 * DAY, caller_id=resident.id)
        bolats = _question(session, ago=HOUR, caller_id=resident.id)
        assert claim_question(session, bolats, other, NOW, NOW - HOUR)
        # A retry planned for later is not due yet, however old.
        _question(session, ago=30 * DAY, next_callback_at=NOW + HOUR)
        kazakh = _question(session, ago=HOUR, language="kk")
    lawyer = _logged_in(app, consultant)
    assert 'action="/queue/next"' in lawyer.get("/queue").get_data(as_text=True)
    taken = [_take_and_open(lawyer) for _ in range(2)]
    assert taken == [f"/questions/{urgent}", f"/questions/{plain}"]
    # With a filter: the first Kazakh one, older Russian ones left for others.
    assert _take_and_open(lawyer, language="kk") == f"/questions/{kazakh}"
    with db() as session:
        lawyer_id = session.scalars(select(User.id).where(User.email == consultant)).one()
        assert [session.get(Question, q).claimed_by_id for q in (urgent, plain, kazakh)] == [
            lawyer_id] * 3
        assert session.get(Question, held_resident).status == QUESTION_WAITING
        claimed = session.scalars(select(AuditEvent.question_id).where(
            AuditEvent.action == audit.CLAIMED).order_by(AuditEvent.id)).all()
        assert claimed == [urgent, plain, kazakh]
    # Nothing more this lawyer may take: back to the (filtered) queue, saying so.
    none_left = _take_next(lawyer, language="ru")
    assert none_left.status_code == 303
    assert none_left.headers["Location"] == "/queue?language=ru"
    assert "No question waiting here can be taken now." in lawyer.get(
        "/queue?language=ru").get_data(as_text=True)


def test_two_consultants_taking_the_next_get_different_questions(
        app: Flask, db: Db, consultant: str, coordinator: str, at_now: datetime) -> None:
    with db() as session:
        first, second = _question(session, ago=2 * DAY), _question(session, ago=DAY)
    lawyer, boss = _logged_in(app, consultant), _logged_in(app, coordinator)
    assert _take_and_open(lawyer) == f"/questions/{first}"
    assert _take_and_open(boss) == f"/questions/{second}"
    assert _take_and_open(boss) == "/queue"  # none left for anyone


def test_take_next_twice_in_a_row_claims_once(
        app: Flask, db: Db, consultant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The button posted twice (a double click without JavaScript) claims one question, and
    both answers open it; one CLAIMED event. After REPEAT_TAKE_WINDOW, or once the question is
    opened, the next take claims another one."""
    clock = [NOW]
    monkeypatch.setattr("hotline.queue_page.utcnow", lambda: clock[0])
    with db() as session:
        first, second, third = (_question(session, ago=3 * DAY), _question(session, ago=2 * DAY),
                                _question(session, ago=DAY))
    lawyer = _logged_in(app, consultant)
    token = lawyer.token("/queue")
    twice = [lawyer.post("/queue/next", {"csrf_token": token}) for _ in range(2)]
    assert [r.status_code for r in twice] == [303, 303]
    assert [r.headers["Location"] for r in twice] == [f"/questions/{first}"] * 2
    with db() as session:
        assert [_state(session, q) for q in (first, second, third)] == [
            (QUESTION_CLAIMED, NOW), (QUESTION_WAITING, None), (QUESTION_WAITING, None)]
        assert _claim_events(session) == [first]
    # Still a repeat near the window's end (the first request's clock may be behind).
    clock[0] = NOW + REPEAT_TAKE_WINDOW
    assert _take_next(lawyer).headers["Location"] == f"/questions/{first}"
    # After the window, a take is a new one even without the first question opened.
    clock[0] = NOW + REPEAT_TAKE_WINDOW + timedelta(seconds=1)
    assert _take_next(lawyer).headers["Location"] == f"/questions/{second}"
    # Within the window of that claim, but the question was opened: a new take, too.
    assert lawyer.get(f"/questions/{second}").status_code == 200
    assert _take_next(lawyer).headers["Location"] == f"/questions/{third}"
    with db() as session:
        assert [_state(session, q)[0] for q in (first, second, third)] == [QUESTION_CLAIMED] * 3
        assert _claim_events(session) == [first, second, third]


def test_the_queue_reminds_a_consultant_of_the_questions_they_hold(
        app: Flask, db: Db, consultant: str, coordinator: str) -> None:
    """A question taken and forgotten waits, unanswered, until its claim lapses: the queue
    names what this user holds, with links, in their language; not others' claims, nor one
    released."""
    with db() as session:
        first, second, theirs = (_question(session, ago=3 * DAY), _question(session, ago=2 * DAY),
                                 _question(session, ago=DAY))
    lawyer = _logged_in(app, consultant)
    assert "id=\"mine\"" not in lawyer.get("/queue").get_data(as_text=True)
    boss = _logged_in(app, coordinator)
    boss.post(f"/questions/{theirs}/claim", {"csrf_token": boss.token("/queue")})
    token = lawyer.token("/queue")
    for question_id in (first, second):
        lawyer.post(f"/questions/{question_id}/claim", {"csrf_token": token})
    html = lawyer.get("/queue?lang=ru").get_data(as_text=True)
    mine = re.search(r'<p class="notice" id="mine">(.*?)</p>', html, re.S)
    assert mine is not None
    assert mine.group(1).startswith("У вас 2 вопроса: завершите их или верните в очередь; без "
                                    "действий 30 минут они вернутся в очередь сами.")
    assert re.findall(r'href="/questions/(\d+)"', mine.group(1)) == [str(first), str(second)]
    lawyer.post(f"/questions/{first}/release", {"csrf_token": token})
    html = lawyer.get("/queue?lang=en").get_data(as_text=True)
    mine = re.search(r'<p class="notice" id="mine">(.*?)</p>', html, re.S)
    assert mine is not None and mine.group(1).startswith("You hold 1 question: finish or "
                                                          "release it")
    assert re.findall(r'href="/questions/(\d+)"', mine.group(1)) == [str(second)]


def _state(session: Session, question_id: int) -> tuple[str, datetime | None]:
    question = session.get(Question, question_id)
    assert question is not None
    return question.status, question.claimed_at


def _claim_events(session: Session) -> list[int | None]:
    return list(session.scalars(select(AuditEvent.question_id).where(
        AuditEvent.action == audit.CLAIMED).order_by(AuditEvent.id)))


def test_take_next_outside_calling_hours_takes_an_sms_question(
        app: Flask, db: Db, consultant: str, at_now: datetime,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """At 22:00 in Almaty nobody can be called: the next question is one answered by SMS,
    unless the consultant chose calls in the filter."""
    night = datetime.now(ALMATY).replace(hour=22, minute=0)
    monkeypatch.setattr("hotline.callbacks.calling_clock", lambda: night.astimezone(UTC))
    with db() as session:
        call = _question(session, ago=3 * DAY)
        sms = _question(session, ago=DAY, channel=CHANNEL_SMS)
        later_call = _question(session, ago=2 * DAY)
    lawyer = _logged_in(app, consultant)
    assert "Outside calling hours: the first SMS question" in lawyer.get("/queue").get_data(
        as_text=True)
    assert _take_and_open(lawyer) == f"/questions/{sms}"
    assert _take_and_open(lawyer) == "/queue?channel=sms"  # none left
    assert _take_and_open(lawyer, channel=CHANNEL_VOICE) == f"/questions/{call}"
    with db() as session:
        assert session.get(Question, later_call).status == QUESTION_WAITING
