"""The SMS receipt for a recorded question (hotline.receipts): whole calls through the signed
webhooks, the download job run inline, the SMS sent to the local stand-in for Twilio's REST API.
On SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import delete, select

from flows.content import load_content
from flows.segments import segments
from hotline.config import Settings
from hotline.outbound_sms import send_sms
from hotline.receipts import RECEIPT_MAX_AGE, RECEIPT_QUIET, can_take_sms, queue_receipt
from hotline.simulator import MediaServer, PhoneSimulator, Speak
from storage.models import Caller, Question, Recording, SmsMessage
from tests.support import BASE_URL, CALLER, runtime
from tests.twilio_api import TwilioApi
from tests.workspace_support import Db

HOTLINE = "+77000000000"
RUSSIAN_QUESTION = ["2", "0"]  # Russian, then "ask a lawyer" in the main menu
KAZAKH_QUESTION = ["1", "0"]
AGAIN = ["0"]  # a returning caller's language is remembered: straight to the main menu


@pytest.fixture
def settings(settings: Settings, api: TwilioApi) -> Settings:
    return settings.override(twilio_api_url=api.url, public_base_url=BASE_URL, receipt_sms=True)


def receipts(db: Db) -> list[SmsMessage]:
    with db() as session:
        return list(session.scalars(select(SmsMessage).where(SmsMessage.purpose == "receipt")
                                    .order_by(SmsMessage.id)))


def questions(db: Db) -> list[Question]:
    with db() as session:
        return list(session.scalars(select(Question).order_by(Question.id)))


def test_a_recorded_question_gets_one_receipt_with_the_hotlines_number(
        db: Db, api: TwilioApi, phone: PhoneSimulator, question_wav: Path) -> None:
    """Twilio's two callbacks (and a retried one) start the download job more than once: one
    receipt. A second question the same evening gets none."""
    phone.callback_order = "status-twice"
    phone.call([*RUSSIAN_QUESTION, Speak(question_wav)])
    [question] = questions(db)
    [sent] = api.sent()
    assert sent["To"] == CALLER and sent["From"] == HOTLINE
    assert sent["Body"] == ("Халык Уни: ваш вопрос сохранён. Юрист позвонит в течение 3 рабочих "
                            f"дней с номера {HOTLINE}. Ждите этого звонка.")
    assert sent["StatusCallback"] == f"{BASE_URL}/sms/status"
    [receipt] = receipts(db)
    assert (receipt.question_id, receipt.language, receipt.sent_by_id, receipt.status) == (
        question.id, "ru", None, "queued")
    assert receipt.message_sid is not None  # handed to Twilio

    phone.call([*AGAIN, Speak(question_wav)])
    assert len(questions(db)) == 2
    assert len(api.sent()) == 1 and len(receipts(db)) == 1


def test_the_receipt_is_in_the_callers_language(db: Db, api: TwilioApi, phone: PhoneSimulator,
                                                 question_wav: Path) -> None:
    phone.call([*KAZAKH_QUESTION, Speak(question_wav)])
    [sent] = api.sent()
    assert sent["Body"].startswith("Халық Үні: сұрағыңыз сақталды. Заңгер 3 жұмыс күні ішінде "
                                   f"{HOTLINE} нөмірінен")
    assert receipts(db)[0].language == "kk"


def test_a_failed_download_does_not_hold_the_receipt_back(
        db: Db, api: TwilioApi, phone: PhoneSimulator, media: MediaServer,
        question_wav: Path) -> None:
    media.fail_next(*[404] * 8)
    phone.call([*RUSSIAN_QUESTION, Speak(question_wav)])
    with db() as session:
        assert session.scalars(select(Recording.download_state)).one() == "failed"
    assert len(api.sent()) == 1


@pytest.mark.parametrize("number", ["+77172123456", "+77273123456"])
def test_no_receipt_to_a_landline(db: Db, api: TwilioApi, phone: PhoneSimulator,
                                  question_wav: Path, number: str) -> None:
    phone.caller = number
    phone.call([*RUSSIAN_QUESTION, Speak(question_wav)])
    assert len(questions(db)) == 1
    assert api.sent() == [] and receipts(db) == []


def test_no_receipt_to_a_resident_who_said_stop(db: Db, api: TwilioApi, phone: PhoneSimulator,
                                                question_wav: Path) -> None:
    phone.call(["2", "1", ""])  # heard the pensions explainer: their caller row exists
    with db() as session:
        session.scalars(select(Caller)).one().sms_opted_out = True
    phone.call([*AGAIN, Speak(question_wav)])
    assert len(questions(db)) == 1
    assert api.sent() == [] and receipts(db) == []


def test_no_receipt_when_switched_off(app: Flask, db: Db, api: TwilioApi,
                                      phone: PhoneSimulator, question_wav: Path) -> None:
    rt = runtime(app)
    rt.settings = rt.settings.override(receipt_sms=False)
    phone.call([*RUSSIAN_QUESTION, Speak(question_wav)])
    assert len(questions(db)) == 1 and api.sent() == []


def test_late_runs_and_closed_questions_get_none_and_the_quiet_time_ends(
        app: Flask, db: Db, api: TwilioApi, phone: PhoneSimulator, question_wav: Path) -> None:
    """The download job of a question recorded hours ago (a backlog after a worker outage,
    `recordings retry`) or of a closed one sends nothing; a question recorded after the quiet
    time gets its own receipt."""
    rt = runtime(app)
    rt.settings = rt.settings.override(receipt_sms=False)
    for keys in (RUSSIAN_QUESTION, AGAIN, AGAIN):
        phone.call([*keys, Speak(question_wav)])
    rt.settings = rt.settings.override(receipt_sms=True)
    with db() as session:
        first, second, third = session.scalars(select(Recording).order_by(Recording.id)).all()
        created = first.created_at
        first.question.status = "closed"
        ids = first.id, second.id, third.id
        question_ids = [second.question_id, third.question_id]
    assert queue_receipt(rt, ids[0], now=created + timedelta(minutes=5)) is None  # closed
    assert queue_receipt(rt, ids[1], now=created + RECEIPT_MAX_AGE + timedelta(minutes=5)) is None
    sent = queue_receipt(rt, ids[1], now=created + timedelta(minutes=5))
    assert sent is not None
    assert queue_receipt(rt, ids[1], now=created + timedelta(minutes=6)) is None  # once
    assert queue_receipt(rt, ids[2], now=created + timedelta(minutes=7)) is None  # quiet
    with db() as session:  # the third question recorded the next morning
        later_question = session.get(Question, question_ids[1])
        assert later_question is not None
        later_question.created_at = created + RECEIPT_QUIET + timedelta(minutes=10)
    later = queue_receipt(rt, ids[2], now=created + RECEIPT_QUIET + timedelta(minutes=15))
    assert later is not None and later != sent
    assert [r.question_id for r in receipts(db)] == question_ids


def test_at_night_only_right_after_the_call(app: Flask, db: Db, api: TwilioApi,
                                            phone: PhoneSimulator, question_wav: Path) -> None:
    """Recorded at 22:50 Almaty (calling hours 9-20): a job at 23:00 sends the receipt, one
    that ran late, at 23:30, sends nothing; in the evening's calling hours the two hours hold."""
    rt = runtime(app)
    rt.settings = rt.settings.override(receipt_sms=False)
    phone.call([*RUSSIAN_QUESTION, Speak(question_wav)])
    rt.settings = rt.settings.override(receipt_sms=True)
    almaty = timezone(timedelta(hours=5))
    recorded = datetime(2026, 12, 7, 22, 50, tzinfo=almaty)
    with db() as session:
        recording = session.scalars(select(Recording)).one()
        recording.question.created_at = recorded
        recording_id = recording.id
    assert queue_receipt(rt, recording_id, now=recorded + timedelta(minutes=40)) is None
    assert queue_receipt(rt, recording_id, now=recorded + timedelta(minutes=10)) is not None
    with db() as session:
        session.scalars(select(Recording)).one().question.created_at = recorded.replace(hour=18)
        session.execute(delete(SmsMessage))
    # 18:50 + 1 h: still calling hours, within the two hours.
    assert queue_receipt(rt, recording_id, now=recorded.replace(hour=19, minute=50)) is not None


@pytest.mark.parametrize("meanwhile", ["hours pass", "the question is closed"])
def test_a_receipt_whose_sending_fails_is_not_sent_too_late(
        app: Flask, db: Db, api: TwilioApi, phone: PhoneSimulator, question_wav: Path,
        meanwhile: str) -> None:
    """The receipt is queued at once, but Twilio is down and its sending is tried again for
    hours (the jobs' retries, the sweep): the rules of its queueing hold at its sending too.
    Hours later, or once a lawyer has called and closed the question, it is given up: not
    "wait for our call" at 03:00, nor after the call."""
    rt = runtime(app)
    rt.settings = rt.settings.override(receipt_sms=False)
    phone.call([*RUSSIAN_QUESTION, Speak(question_wav)])
    rt.settings = rt.settings.override(receipt_sms=True)
    with db() as session:
        recording_id = session.scalars(select(Recording)).one().id
    receipt_id = queue_receipt(rt, recording_id)
    assert receipt_id is not None
    with db() as session:
        question = session.scalars(select(Question)).one()
        if meanwhile == "hours pass":
            question.created_at = question.created_at - timedelta(hours=9)
        else:
            question.status = "closed"
    assert send_sms(rt, receipt_id) == "failed"
    assert api.sent() == []
    [receipt] = receipts(db)
    assert receipt.error_message is not None and "too late" in receipt.error_message


def test_two_workers_fetching_two_questions_of_one_resident_send_one_receipt(
        app: Flask, db: Db, api: TwilioApi, phone: PhoneSimulator, question_wav: Path) -> None:
    """Two download jobs at once, on two threads with their own connections: the caller's row
    lock makes the second see the first's receipt. The test holds that row while both start,
    so both reach the decision together (without the lock both would send)."""
    rt = runtime(app)
    rt.settings = rt.settings.override(receipt_sms=False)
    for keys in (RUSSIAN_QUESTION, AGAIN):
        phone.call([*keys, Speak(question_wav)])
    rt.settings = rt.settings.override(receipt_sms=True)
    with db() as session:
        recording_ids = list(session.scalars(select(Recording.id).order_by(Recording.id)))
    results: list[int | None] = []
    with rt.sessions() as holder, holder.begin():
        holder.execute(select(Caller.id).with_for_update())  # what the SMS insert must wait for
        threads = [threading.Thread(target=lambda r=r: results.append(queue_receipt(rt, r)))
                   for r in recording_ids]
        for thread in threads:
            thread.start()
        time.sleep(1.0)
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(r is not None for r in results) == [False, True]
    assert len(receipts(db)) == 1


@pytest.mark.parametrize("language", ["kk", "ru"])
def test_the_receipt_fits_in_two_sms_parts(language: str) -> None:
    text = load_content().text(language, "sms.question_recorded")
    filled = text.replace("{days}", "10").replace("{number}", "+77012345678")
    assert segments(filled).parts <= 2


def test_numbers_that_can_take_an_sms() -> None:
    assert can_take_sms(CALLER) and can_take_sms("+77771234567")
    assert not can_take_sms("+77172123456")  # Astana, a landline
    assert not can_take_sms("hotline-pseudonym") and not can_take_sms("")


def test_the_receipt_setting_from_the_environment() -> None:
    assert Settings.from_env({}).receipt_sms is True
    assert Settings.from_env({"HOTLINE_DEMO": "1"}).receipt_sms is False
    assert Settings.from_env({"HOTLINE_RECEIPT_SMS": "0"}).receipt_sms is False
    assert Settings.from_env({"HOTLINE_DEMO": "1", "HOTLINE_RECEIPT_SMS": "1"}).receipt_sms
