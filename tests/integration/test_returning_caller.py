"""A returning caller whose question waits for a lawyer is told so before the main menu
(Flow.start; storage.calls.answer_incoming_call reads it): whole calls through the signed
webhooks, on SQLite and on PostgreSQL (where the read is part of the incoming call's one
statement)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import select

from hotline.simulator import PhoneSimulator, Speak
from storage.models import Caller, Question
from storage.question_page import caller_history
from storage.retention import pseudonym
from tests.support import CALLER, Twilio, call_form, runtime, spoken, twiml
from tests.workspace_support import Db

RUSSIAN_QUESTION = ["2", "0"]  # Russian, then "ask a lawyer"


def test_a_caller_whose_question_waits_is_told_so_until_it_is_closed(
        app: Flask, db: Db, phone: PhoneSimulator, question_wav: Path) -> None:
    flow = runtime(app).flow
    waiting = flow.prompt("ru", "queue.waiting").text
    main_menu = flow.prompt("ru", "menu.main").text

    first = phone.call([*RUSSIAN_QUESTION, Speak(question_wav)])
    assert waiting not in first.texts()  # nothing waited yet

    again = phone.call(["", "", "", ""])  # calls back the next day and listens
    heard = again.texts()
    assert heard[0] == flow.prompt("ru", "greeting").text
    assert heard[1] == waiting
    assert heard[2] == main_menu  # then the menu, as always

    with db() as session:
        session.scalars(select(Question)).one().status = "claimed"  # a lawyer took it
    assert waiting in phone.call([""]).texts()[:2]
    with db() as session:
        session.scalars(select(Question)).one().status = "closed"
    assert waiting not in phone.call([""]).texts()


def test_another_caller_and_a_new_number_are_not_told(
        app: Flask, db: Db, phone: PhoneSimulator, question_wav: Path) -> None:
    waiting = runtime(app).flow.prompt("ru", "queue.waiting").text
    phone.call([*RUSSIAN_QUESTION, Speak(question_wav)])
    phone.caller = "+77019998877"
    assert waiting not in phone.call(["2", ""]).texts()  # a new number: the language menu
    assert waiting not in phone.call([""]).texts()  # now returning, with nothing waiting


def test_a_kazakh_caller_hears_it_in_kazakh(app: Flask, phone: PhoneSimulator,
                                            question_wav: Path) -> None:
    flow = runtime(app).flow
    phone.call(["1", "0", Speak(question_wav)])
    heard = phone.call([""]).texts()
    assert heard[:2] == [flow.prompt("kk", "greeting").text,
                         flow.prompt("kk", "queue.waiting").text]


def test_a_caller_who_never_chose_a_language_is_told_in_both(
        app: Flask, phone: PhoneSimulator, question_wav: Path) -> None:
    """Silence on the language menu, then the offer to record: the question is stored with no
    language. Calling again, the resident hears that it waits, in both languages, each after
    its greeting, and then the language menu: not led to record the same question again."""
    flow = runtime(app).flow
    phone.call(["", "", "", Speak(question_wav)])
    heard = phone.call([""]).texts()
    expected = [flow.prompt(code, key).text for code in flow.content.language_codes
                for key in ("greeting", "queue.waiting")]
    assert heard[:len(expected)] == expected
    assert heard[len(expected)] == flow.prompt(flow.content.language_codes[0],
                                               "language.choose").text
    # Silence there to the end: told again, in both languages, and goodbye; nothing recorded.
    again = phone.call(["", "", "", Speak(question_wav)]).texts()
    assert again[-4:] == [flow.prompt(code, key).text for key in ("queue.waiting", "goodbye")
                          for code in flow.content.language_codes]


def test_a_waiting_caller_who_only_listens_stores_nothing_new(
        app: Flask, db: Db, phone: PhoneSimulator, question_wav: Path) -> None:
    """Through the signed webhooks: the resident calls back to ask after the question and says
    nothing; they hear that it waits, once more at the end, and goodbye; no second question."""
    flow = runtime(app).flow
    phone.call([*RUSSIAN_QUESTION, Speak(question_wav)])
    again = phone.call(["", "", "", Speak(question_wav)])
    heard = again.texts()
    assert heard[-2:] == [flow.prompt("ru", "queue.waiting").text,
                          flow.prompt("ru", "goodbye").text]
    assert flow.prompt("ru", "record.intro").text not in heard
    with db() as session:
        assert len(session.scalars(select(Question)).all()) == 1


@pytest.mark.parametrize("keys", [["3"], ["9"], ["3", "*"]],
                         ids=["an explainer", "the language menu", "back from an explainer"])
def test_a_waiting_caller_who_wanders_and_falls_silent_is_let_go(
        app: Flask, db: Db, phone: PhoneSimulator, question_wav: Path, keys: list[str]) -> None:
    """Away from the greeting's main menu, "your question waits" is not carried in the action
    URLs: silence to the end of an explainer, the language menu (9) or the main menu after *
    used to end in the offer to record, and an anxious resident recorded the same question
    again. The menu webhook asks the database on that way: told it waits, and goodbye."""
    flow = runtime(app).flow
    phone.call([*RUSSIAN_QUESTION, Speak(question_wav)])
    again = phone.call([*keys, "", "", "", Speak(question_wav)])
    heard = again.texts()
    assert heard[-2:] == [flow.prompt("ru", "queue.waiting").text,
                          flow.prompt("ru", "goodbye").text]
    assert flow.prompt("ru", "record.intro").text not in heard[2:]
    with db() as session:
        assert len(session.scalars(select(Question)).all()) == 1
    # Its question closed, the same silence is offered the recorder, as anyone is.
    with db() as session:
        session.scalars(select(Question)).one().status = "closed"
    assert flow.prompt("ru", "record.intro").text in phone.call([*keys, "", "", ""]).texts()


def test_a_caller_who_recorded_and_went_back_to_the_menu_is_not_asked_again(
        app: Flask, db: Db, phone: PhoneSimulator, question_wav: Path) -> None:
    """A new caller leaves a question, presses 0 for the main menu as the promise invites, and
    falls silent: told that the question waits, and goodbye, not the recorder a second time."""
    flow = runtime(app).flow
    heard = phone.call([*RUSSIAN_QUESTION, Speak(question_wav), "0", "", "", "",
                        Speak(question_wav)]).texts()
    assert heard.count(flow.prompt("ru", "record.intro").text) == 1
    assert heard[-2:] == [flow.prompt("ru", "queue.waiting").text,
                          flow.prompt("ru", "goodbye").text]
    with db() as session:
        assert len(session.scalars(select(Question)).all()) == 1


def test_after_an_apology_a_waiting_caller_is_still_let_go_not_asked_to_record(
        app: Flask, phone: PhoneSimulator, twilio: Twilio, question_wav: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure on the menu (the apology, then the main menu again through /voice/show) does
    not forget that the caller's question waits: silence there still ends with "your question
    waits" and goodbye, not with the offer to record the same question again."""
    flow = runtime(app).flow
    phone.call([*RUSSIAN_QUESTION, Speak(question_wav)])
    incoming = twiml(twilio.post("/voice/incoming", call_form()))
    assert spoken(incoming)[1] == flow.prompt("ru", "queue.waiting").text
    press = flow.press

    def fails_once(*args: object, **kwargs: object) -> object:
        monkeypatch.setattr(flow, "press", press)
        raise RuntimeError("database down")

    monkeypatch.setattr(flow, "press", fails_once)
    apology = twiml(twilio.post_url(incoming.find("Gather").get("action", ""), call_form()))
    assert spoken(apology) == [flow.prompt("ru", "error.apology").text]
    screen = twiml(twilio.post_url(apology.findtext("Redirect", ""), call_form()))
    heard: list[str] = []
    for _ in range(6):  # silence, as long as the hotline keeps asking
        heard += spoken(screen)
        gather = screen.find("Gather")
        if gather is None:
            break
        screen = twiml(twilio.post_url(gather.get("action", ""), call_form()))
    heard += spoken(screen)
    assert flow.prompt("ru", "menu.main").text in heard
    assert heard[-2:] == [flow.prompt("ru", "queue.waiting").text,
                          flow.prompt("ru", "goodbye").text]
    assert flow.prompt("ru", "record.intro").text not in heard
    assert screen.find("Hangup") is not None


def test_a_resident_back_after_their_number_was_pseudonymised_is_joined_at_once(
        app: Flask, db: Db, phone: PhoneSimulator, question_wav: Path) -> None:
    """Retention pseudonymised the resident's number (no contact for a year); they call and
    record a question: it is joined to their earlier record now, not at a later retention
    run, so the lawyer sees their history (and a question asked within 90 days of an earlier
    one counts as a repeat: with a short HOTLINE_PHONE_RETENTION_DAYS)."""
    key = runtime(app).pseudonym_key
    now = datetime.now(UTC)
    with db() as session:
        earlier = Caller(phone=pseudonym(CALLER, key), first_seen=now - timedelta(days=60),
                         last_seen=now - timedelta(days=40), language="ru")
        session.add(earlier)
        session.flush()
        session.add(Question(caller_id=earlier.id, channel="voice", language="ru",
                             topic="pension", status="closed", close_reason="resolved",
                             created_at=now - timedelta(days=45),
                             closed_at=now - timedelta(days=40)))
        earlier_id = earlier.id
    phone.call([*RUSSIAN_QUESTION, Speak(question_wav)])
    with db() as session:
        assert session.get(Caller, earlier_id) is None
        [back] = session.scalars(select(Caller))
        assert back.phone == CALLER
        old, new = session.scalars(select(Question).order_by(Question.id))
        assert old.caller_id == new.caller_id == back.id
        assert new.repeat_caller
        assert [q.id for q in caller_history(session, new).questions] == [old.id]
