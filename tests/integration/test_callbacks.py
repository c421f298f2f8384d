"""Calling back through the consultant's phone against a local stand-in for Twilio's REST API,
Twilio's signed webhooks for the bridge, the outcome form with retries and the final SMS, and
SMS answers with their delivery status. On SQLite and PostgreSQL."""

from __future__ import annotations

import html
import re
import shutil
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select, text, update
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from flows.content import DEFAULT_CONTENT_DIR, ContentError, load_content
from flows.segments import segments
from hotline import callbacks
from hotline.config import ConfigError, Settings
from hotline.outbound_sms import WAITING_FOR_MORNING
from storage import audit
from storage.callbacks import close_question, next_callback_time, retry_delay
from storage.calls import touch_caller
from storage.claims import lock_resident_of
from storage.models import (
    CHANNEL_VOICE,
    SMS_IN,
    AuditEvent,
    CallbackAttempt,
    Caller,
    Question,
    SmsMessage,
    User,
)
from storage.retention import pseudonym
from tests.support import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    BASE_URL,
    CALLER,
    Twilio,
    held_meanwhile,
    row_counts,
    spoken,
    twiml,
)
from tests.twilio_api import CALLS, TwilioApi, twilio_error
from tests.workspace_support import PASSWORD, Browser, Db, page, users_cli

HOTLINE = "+77000000000"
CONSULTANT_PHONE = "+77051234567"
ALMATY = timezone(timedelta(hours=5))
EVENTS = ["initiated", "ringing", "answered", "completed"]
FUTURE = 2031  # outcomes are recorded at faked times; planned retries stay in the future


@pytest.fixture
def settings(settings: Settings, api: TwilioApi) -> Settings:
    """The REST API on the stand-in; Twilio reaches the app at BASE_URL."""
    return settings.override(twilio_api_url=api.url, public_base_url=BASE_URL)


def add_account(app: Flask, email: str, phone: str | None = CONSULTANT_PHONE,
                name: str = "Aigerim Nurlanovna", role: str = "consultant") -> None:
    args = ["add", email, "--role", role, "--name", name]
    if phone:
        args += ["--phone", phone]
    result = users_cli(app, args, input=f"{PASSWORD}\n{PASSWORD}\n")
    assert result.exit_code == 0, result.output


def make_question(db: Db, language: str = "ru", phone: str | None = CALLER) -> int:
    now = datetime.now(UTC)
    with db() as session:
        caller = touch_caller(session, phone, now) if phone else None
        question = Question(caller_id=caller.id if caller else None, channel=CHANNEL_VOICE,
                            language=language, topic="pension", created_at=now,
                            transcription_state="done")
        session.add(question)
        session.flush()
        return question.id


class Consultant:
    """A logged-in consultant's browser, with the workspace's forms as methods."""

    def __init__(self, app: Flask, email: str) -> None:
        self.browser = Browser(app)
        assert self.browser.login(email).status_code == 302

    def token(self) -> str:
        return self.browser.token("/queue")

    def claim(self, question_id: int) -> TestResponse:
        return self.browser.post(f"/questions/{question_id}/claim", {"csrf_token": self.token()})

    def call(self, question_id: int) -> TestResponse:
        return self.browser.post(f"/questions/{question_id}/call", {"csrf_token": self.token()})

    def outcome(self, question_id: int, outcome: str, referral: str = "",
                also: list[str] | None = None, own_phone: bool = False) -> TestResponse:
        """The outcome form (own_phone: "I called from my own phone" ticked)."""
        form = {"csrf_token": self.token(), "outcome": outcome, "referral": referral,
                "also": also or []}
        if own_phone:
            form["own_phone"] = "1"
        return self.browser.post(f"/questions/{question_id}/outcome", form)

    def sms(self, question_id: int, body: str) -> TestResponse:
        return self.browser.post(f"/questions/{question_id}/sms",
                                 {"csrf_token": self.token(), "body": body})

    def panel(self, question_id: int) -> str:
        response = self.browser.get(f"/questions/{question_id}/callback-panel")
        assert response.status_code == 200
        return response.get_data(as_text=True)

    def notices(self) -> str:
        """The messages flashed since the last page (shown on the next page)."""
        page_html = self.browser.get("/queue").get_data(as_text=True)
        return html.unescape(" ".join(re.findall(
            r'<p class="(?:notice|error|warning)"[^>]*>([^<]*)</p>', page_html)))


def section(html: str, element_id: str) -> str:
    """The text of the element with this id (a div, section or p), tags and spaces folded."""
    match = re.search(rf'<(\w+)[^>]*\bid="{element_id}"', html)
    assert match, f"#{element_id} not in the page"
    tag = match.group(1)
    rest = html[match.start():]
    depth, position = 0, 0
    for found in re.finditer(rf"<(/?){tag}\b[^>]*>", rest):
        depth += -1 if found.group(1) else 1
        if depth == 0:
            position = found.end()
            break
    text = re.sub(r"<[^>]+>", " ", rest[:position])
    return " ".join(text.split()).replace("&#39;", "'").replace("&amp;", "&")


def polls(html: str, element_id: str) -> bool:
    """Whether the element asks htmx to refresh it."""
    match = re.search(rf'<\w+[^>]*\bid="{element_id}"[^>]*>', html, re.S)
    assert match
    return "hx-trigger" in match.group(0)


@pytest.fixture
def lawyer(app: Flask) -> Consultant:
    add_account(app, "lawyer@example.kz")
    return Consultant(app, "lawyer@example.kz")


@pytest.fixture
def question_id(db: Db, lawyer: Consultant) -> int:
    """A Russian voice question, claimed by the lawyer."""
    question_id = make_question(db)
    assert lawyer.claim(question_id).status_code == 303
    return question_id


def attempts(db: Db, question_id: int) -> list[CallbackAttempt]:
    with db() as session:
        return list(session.scalars(select(CallbackAttempt).where(
            CallbackAttempt.question_id == question_id).order_by(CallbackAttempt.id)))


def load_question(db: Db, question_id: int) -> Question:
    with db() as session:
        question = session.get(Question, question_id)
        assert question is not None
        return question


def events(db: Db, action: str) -> list[AuditEvent]:
    with db() as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.action == action)
                                    .order_by(AuditEvent.id)))


def leg_form(call_sid: str, status: str, **extra: str) -> dict[str, str]:
    return {"CallSid": call_sid, "AccountSid": ACCOUNT_SID, "CallStatus": status,
            "From": HOTLINE, "To": CONSULTANT_PHONE, "Direction": "outbound-api",
            "ApiVersion": "2010-04-01", **extra}


def resident_form(call_sid: str, parent: str, status: str, **extra: str) -> dict[str, str]:
    return {"CallSid": call_sid, "ParentCallSid": parent, "AccountSid": ACCOUNT_SID,
            "CallStatus": status, "From": HOTLINE, "To": CALLER, "Direction": "outbound-dial",
            "ApiVersion": "2010-04-01", **extra}


def started_call(lawyer: Consultant, api: TwilioApi, db: Db,
                 question_id: int) -> tuple[CallbackAttempt, dict[str, str]]:
    """Press Call; return the attempt and the form Twilio's API received."""
    response = lawyer.call(question_id)
    assert response.status_code == 303
    assert response.headers["Location"] == f"/questions/{question_id}#callback-panel"
    [attempt] = [a for a in attempts(db, question_id) if a.state == "dialing"]
    request = api.calls()[-1]
    return attempt, request.form


def new_sid(prefix: str) -> str:
    return prefix + uuid.uuid4().hex


# -- the bridge -------------------------------------------------------------------------------

def test_the_whole_bridge(app: Flask, db: Db, api: TwilioApi, twilio: Twilio,
                          lawyer: Consultant, question_id: int) -> None:
    before = datetime.now(UTC)
    attempt, form = started_call(lawyer, api, db, question_id)
    # Twilio's REST API was asked to call the consultant's own phone from the hotline.
    [request] = api.requests
    assert request.authorised and request.path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json"
    base = f"{BASE_URL}/callbacks/{attempt.id}"
    assert form["To"] == CONSULTANT_PHONE and form["From"] == HOTLINE
    assert form["Url"] == f"{base}/answer" and form["Method"] == "POST"
    assert form["StatusCallback"] == f"{base}/status/consultant"
    assert request.fields["StatusCallbackEvent"] == EVENTS
    assert form["Timeout"] == "30" and form["MachineDetection"] == "Enable"
    consultant_sid = attempt.consultant_call_sid
    assert consultant_sid is not None and re.fullmatch(r"CA[0-9a-f]{32}", consultant_sid)
    assert attempt.consultant_status == "queued" and attempt.consultant_id is not None
    # Only the consultant's phone is being called: not yet a callback (the reports' and the
    # public page's "answered").
    assert load_question(db, question_id).first_callback_at is None
    [called] = events(db, audit.CALLED)
    assert called.detail == {"attempt_id": attempt.id, "retry_planned_for": None}
    assert called.question_id == question_id and called.ip == lawyer.browser.ip
    assert CALLER not in str(called.detail) and CONSULTANT_PHONE not in str(called.detail)
    assert "on its way" not in lawyer.notices()  # the call's notice, shown once
    html = lawyer.panel(question_id)
    assert section(html, "call-state") == "Calling your phone…"
    assert polls(html, "callback-status")

    # Twilio rings the consultant.
    for status in ("initiated", "ringing"):
        assert twilio.post(f"/callbacks/{attempt.id}/status/consultant",
                           leg_form(consultant_sid, status)).status_code == 204
    assert section(lawyer.panel(question_id), "call-state") == "Your phone is ringing: answer it."

    # The consultant answers: TwiML tells them and dials the resident as the hotline.
    answer = twiml(twilio.post_url(form["Url"], leg_form(consultant_sid, "in-progress",
                                                         AnsweredBy="human")))
    [say] = answer.findall("Say")
    assert say.get("language") == "ru-RU" and f"номер {question_id}" in spoken(answer)[0]
    [dial] = answer.findall("Dial")
    assert dial.get("callerId") == HOTLINE and dial.get("answerOnBridge") == "true"
    assert dial.get("timeout") == "30" and dial.get("action") == f"{base}/dialed"
    [number] = dial.findall("Number")
    assert number.text == CALLER
    assert number.get("statusCallback") == f"{base}/status/resident"
    assert number.get("statusCallbackEvent") == "initiated ringing answered completed"
    assert section(lawyer.panel(question_id), "call-state") == \
        "You answered. Calling the resident…"
    question = load_question(db, question_id)
    assert question.first_callback_at is not None and question.first_callback_at >= before

    resident_sid = new_sid("CA")
    resident = f"/callbacks/{attempt.id}/status/resident"
    twilio.post(resident, resident_form(resident_sid, consultant_sid, "initiated"))
    twilio.post(resident, resident_form(resident_sid, consultant_sid, "ringing"))
    assert section(lawyer.panel(question_id), "call-state") == \
        "You answered. The resident's phone is ringing…"
    twilio.post(resident, resident_form(resident_sid, consultant_sid, "in-progress"))
    # Late and repeated callbacks change nothing.
    twilio.post(resident, resident_form(resident_sid, consultant_sid, "ringing"))
    twilio.post(f"/callbacks/{attempt.id}/status/consultant", leg_form(consultant_sid,
                                                                        "ringing"))
    html = lawyer.panel(question_id)
    assert section(html, "call-state") == "Connected with the resident."
    assert polls(html, "callback-status")

    # The resident hangs up: the Dial's action, then the legs' final statuses.
    hangup = twiml(twilio.post(f"/callbacks/{attempt.id}/dialed", {
        **leg_form(consultant_sid, "in-progress"), "DialCallStatus": "completed",
        "DialCallSid": resident_sid, "DialCallDuration": "95"}))
    assert [child.tag for child in hangup] == ["Say", "Hangup"]
    twilio.post(resident, resident_form(resident_sid, consultant_sid, "completed",
                                        CallDuration="95"))
    twilio.post(resident, resident_form(resident_sid, consultant_sid, "in-progress"))
    twilio.post(f"/callbacks/{attempt.id}/status/consultant",
                leg_form(consultant_sid, "completed", CallDuration="110"))
    twilio.post(f"/callbacks/{attempt.id}/status/consultant",
                leg_form(consultant_sid, "in-progress"))
    [done] = attempts(db, question_id)
    assert (done.state, done.consultant_status, done.resident_status) == (
        "ended", "completed", "completed")
    assert (done.resident_call_sid, done.duration) == (resident_sid, 95)
    assert done.ended_at is not None and done.error is None
    html = lawyer.panel(question_id)
    assert section(html, "call-state") == "Ended: you talked for 1:35."
    assert not polls(html, "callback-status")
    assert 'id="outcome-form"' in html and 'id="call-form"' in html
    # No number in the audit log at all.
    with db() as session:
        for event in session.scalars(select(AuditEvent)):
            assert CALLER not in str(event.detail) and CONSULTANT_PHONE not in str(event.detail)


def test_statuses_out_of_order_end_in_the_same_state(db: Db, api: TwilioApi, twilio: Twilio,
                                                     lawyer: Consultant,
                                                     question_id: int) -> None:
    attempt, _form = started_call(lawyer, api, db, question_id)
    sid = attempt.consultant_call_sid
    assert sid is not None
    resident_sid = new_sid("CA")
    path = f"/callbacks/{attempt.id}/status"
    # Everything arrives backwards.
    twilio.post(f"{path}/consultant", leg_form(sid, "completed"))
    twilio.post(f"{path}/resident", resident_form(resident_sid, sid, "no-answer"))
    twilio.post(f"{path}/resident", resident_form(resident_sid, sid, "ringing"))
    twilio.post(f"{path}/consultant", leg_form(sid, "in-progress"))
    twilio.post(f"{path}/consultant", leg_form(sid, "ringing"))
    [done] = attempts(db, question_id)
    assert (done.state, done.consultant_status, done.resident_status) == (
        "ended", "completed", "no-answer")
    html = lawyer.panel(question_id)
    assert section(html, "call-state") == "Ended: the resident did not answer."
    # The form suggests "no answer"; the consultant still chooses.
    assert re.search(r'value="no_answer" required checked', html)


@pytest.mark.parametrize(("dial_status", "words"), [
    ("no-answer", "Ended: the resident did not answer."),
    ("busy", "Ended: the resident's line was busy."),
    ("failed", "Ended: the call to the resident failed."),
])
def test_the_dial_action_tells_how_the_resident_leg_ended(
        db: Db, api: TwilioApi, twilio: Twilio, lawyer: Consultant, question_id: int,
        dial_status: str, words: str) -> None:
    attempt, form = started_call(lawyer, api, db, question_id)
    sid = attempt.consultant_call_sid
    assert sid is not None
    twiml(twilio.post_url(form["Url"], leg_form(sid, "in-progress")))
    response = twiml(twilio.post(f"/callbacks/{attempt.id}/dialed", {
        **leg_form(sid, "in-progress"), "DialCallStatus": dial_status}))
    assert [child.tag for child in response] == ["Say", "Hangup"]
    assert section(lawyer.panel(question_id), "call-state") == words


def test_an_answering_machine_is_never_bridged(db: Db, api: TwilioApi, twilio: Twilio,
                                               lawyer: Consultant, question_id: int) -> None:
    attempt, form = started_call(lawyer, api, db, question_id)
    sid = attempt.consultant_call_sid
    assert sid is not None
    response = twiml(twilio.post_url(form["Url"], leg_form(sid, "in-progress",
                                                           AnsweredBy="machine_start")))
    assert [child.tag for child in response] == ["Hangup"]
    [done] = attempts(db, question_id)
    assert done.state == "ended"
    html = lawyer.panel(question_id)
    assert "An answering machine took the call to your phone" in section(html, "call-state")
    # The resident was never called: not answered, for the reports and the public page.
    assert load_question(db, question_id).first_callback_at is None
    assert not polls(html, "callback-status")


def test_a_rest_error_fails_the_attempt_with_twilios_message(
        db: Db, api: TwilioApi, lawyer: Consultant, question_id: int) -> None:
    api.fail_next(twilio_error(400, 21215, "Account not authorized to call this number. "
                                           "Geo permissions are off."), resource=CALLS)
    response = lawyer.call(question_id)
    assert response.status_code == 303
    [attempt] = attempts(db, question_id)
    assert attempt.state == "failed" and attempt.consultant_call_sid is None
    twilios_words = ("Account not authorized to call this number. Geo permissions are off. "
                     "(Twilio error 21215)")
    assert attempt.error == twilios_words
    # No call was made: not the question's first callback (the reports' "answered").
    assert load_question(db, question_id).first_callback_at is None
    # A translated sentence; Twilio's own (English) words as detail on the panel.
    assert "The call was not made: Twilio refused to make the call." in lawyer.notices()
    html = lawyer.panel(question_id)
    assert section(html, "call-state") == "Failed: Twilio refused to make the call."
    assert section(html, "call-detail") == f"Twilio's words: {twilios_words}"
    assert re.search(r'<small[^>]*id="call-detail" lang="en"', html)
    assert not polls(html, "callback-status")
    russian = lawyer.browser.get(f"/questions/{question_id}?lang=ru").get_data(as_text=True)
    assert section(russian, "call-state") == ("Звонок не состоялся. Twilio отказался совершить "
                                              "звонок.")
    assert section(russian, "call-detail") == f"Ответ Twilio: {twilios_words}"
    # A failed attempt does not block the next one.
    assert lawyer.call(question_id).status_code == 303
    assert [a.state for a in attempts(db, question_id)] == ["failed", "dialing"]


def test_an_unreachable_api_fails_the_attempt(app: Flask, db: Db, lawyer: Consultant,
                                              question_id: int) -> None:
    with TwilioApi(ACCOUNT_SID, AUTH_TOKEN) as gone:
        dead = gone.url
    rt = app.extensions["hotline"]
    rt.settings = rt.settings.override(twilio_api_url=dead)
    assert lawyer.call(question_id).status_code == 303
    [attempt] = attempts(db, question_id)
    assert attempt.state == "failed"
    assert attempt.error == "Twilio could not be reached (ConnectionError)"
    html = Consultant(app, "lawyer@example.kz").panel(question_id)
    assert section(html, "call-state") == "Failed: Twilio could not be reached."
    assert section(html, "call-detail") == "Twilio's words: ConnectionError"
    # In Russian one sentence after another, not "Не удалось: Не удалось связаться…".
    russian = Consultant(app, "lawyer@example.kz").browser.get(
        f"/questions/{question_id}?lang=ru").get_data(as_text=True)
    assert section(russian, "call-state") == (
        "Звонок не состоялся. Не удалось связаться с Twilio.")


def test_a_consultant_without_a_phone_is_sent_to_their_account_page(
        app: Flask, db: Db, api: TwilioApi) -> None:
    add_account(app, "nophone@example.kz", phone=None, name="Bolat")
    lawyer = Consultant(app, "nophone@example.kz")
    question_id = make_question(db)
    lawyer.claim(question_id)
    response = lawyer.call(question_id)
    assert response.status_code == 400
    assert "Add it on your account page." in response.get_data(as_text=True)
    assert api.requests == [] and attempts(db, question_id) == []
    html = lawyer.panel(question_id)
    assert 'id="call-form"' not in html
    assert "Add it on your account page." in section(html, "callback-status")
    assert re.search(r'<p class="call-blocked" role="alert">[^<]*<a href="/account">', html)
    assert 'id="outcome-form"' in html  # they may have called by other means


def test_a_resident_without_a_number_cannot_be_called(db: Db, api: TwilioApi,
                                                      lawyer: Consultant) -> None:
    question_id = make_question(db, phone=None)
    lawyer.claim(question_id)
    response = lawyer.call(question_id)
    assert response.status_code == 400
    assert "No phone number is known for this resident." in response.get_data(as_text=True)
    assert api.requests == []
    # The outcome form stays (they may have reached them another way), but it promises no SMS
    # after the last try: none can go to a hidden number.
    hint = section(lawyer.panel(question_id), "outcome-hint")
    assert "The resident's number is hidden" in hint and "gets an SMS" not in hint
    with_number = make_question(db)
    lawyer.claim(with_number)
    assert "after the last try the resident gets an SMS" in section(
        lawyer.panel(with_number), "outcome-hint")


@pytest.mark.parametrize(("hour", "minute", "allowed"), [
    (8, 59, False), (9, 0, True), (19, 59, True), (20, 0, False), (23, 30, False)])
def test_residents_are_called_in_calling_hours_only(
        db: Db, api: TwilioApi, twilio: Twilio, lawyer: Consultant,
        monkeypatch: pytest.MonkeyPatch, hour: int, minute: int, allowed: bool) -> None:
    question_id = make_question(db)
    lawyer.claim(question_id)
    local = datetime.now(ALMATY).replace(hour=hour, minute=minute)
    monkeypatch.setattr(callbacks, "calling_clock", lambda: local.astimezone(UTC))
    # The queue says it before anyone claims a call in the evening, and where the SMS
    # questions are (they can be answered at any hour).
    queue = lawyer.browser.get("/queue")
    assert ('id="calling-hours"' in queue.get_data(as_text=True)) is not allowed
    response = lawyer.call(question_id)
    if allowed:
        assert response.status_code == 303
        assert len(attempts(db, question_id)) == 1
        return
    note = section(queue.get_data(as_text=True), "calling-hours")
    assert (f"Residents are called from 09:00 to 20:00, Almaty time; it is {hour:02d}:"
            f"{minute:02d} now. Calls wait for the morning; SMS questions can be answered "
            "now.") in note
    assert note.endswith("Show the SMS questions")
    assert "/queue?channel=sms" in page(queue).links
    sms_tab = lawyer.browser.get("/queue?channel=sms")
    assert "Calls wait for the morning" in section(sms_tab.get_data(as_text=True),
                                                  "calling-hours")
    assert "Show the SMS questions" not in sms_tab.get_data(as_text=True)
    said = f"Residents are called from 09:00 to 20:00, Almaty time; it is {hour:02d}:{minute:02d}"
    assert response.status_code == 409
    assert said in response.get_data(as_text=True)
    assert api.requests == [] and attempts(db, question_id) == []
    # The panel says so in place of the Call button.
    html = lawyer.panel(question_id)
    assert 'id="call-form"' not in html and said in section(html, "callback-status")
    # The question stays held: the outcome form still works (they may have called by other
    # means), and the claim is not lost by the refusal.
    assert load_question(db, question_id).status == "claimed"


def test_a_call_going_on_when_the_calling_hours_end_is_not_told_to_wait_for_morning(
        db: Db, api: TwilioApi, twilio: Twilio, lawyer: Consultant, question_id: int,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A call begun at 19:55 and still connected at 20:03: the panel, polled every 3 s, shows
    the call's state and no "call in the morning" alert (read out at each poll); once the
    call is over, the hours apply again."""
    attempt, form = started_call(lawyer, api, db, question_id)
    sid = attempt.consultant_call_sid
    assert sid is not None
    twiml(twilio.post_url(form["Url"], leg_form(sid, "in-progress", AnsweredBy="human")))
    resident = f"/callbacks/{attempt.id}/status/resident"
    twilio.post(resident, resident_form("CA" + "1" * 32, sid, "in-progress"))
    evening = datetime.now(ALMATY).replace(hour=20, minute=3)
    monkeypatch.setattr(callbacks, "calling_clock", lambda: evening.astimezone(UTC))
    html = lawyer.panel(question_id)
    assert polls(html, "callback-status") and "call-blocked" not in html
    assert section(html, "call-state") == "Connected with the resident."
    assert "call in the morning" not in section(html, "callback-status")
    twilio.post(resident, resident_form("CA" + "1" * 32, sid, "completed", CallDuration="95"))
    twilio.post(f"/callbacks/{attempt.id}/status/consultant",
                leg_form(sid, "completed", CallDuration="110"))
    html = lawyer.panel(question_id)
    assert not polls(html, "callback-status")
    assert "call in the morning" in section(html, "callback-status")


def test_only_the_holder_can_call_record_an_outcome_or_send_an_sms(
        app: Flask, db: Db, api: TwilioApi, lawyer: Consultant, question_id: int) -> None:
    add_account(app, "other@example.kz", phone="+77071234567", name="Dana")
    other = Consultant(app, "other@example.kz")
    with db() as session:
        before = row_counts(session)
    for response in (other.call(question_id), other.outcome(question_id, "resolved"),
                     other.sms(question_id, "Hello")):
        assert response.status_code == 409
        assert page(response).headings == ["Not your question"]
        assert "being handled by Aigerim Nurlanovna" in response.get_data(as_text=True)
    with db() as session:
        assert row_counts(session) == before
    assert api.requests == []
    html = other.panel(question_id)
    for form in ("call-form", "outcome-form", "sms-form"):
        assert f'id="{form}"' not in html
    # An unclaimed question: nobody holds it.
    waiting = make_question(db)
    assert lawyer.call(waiting).status_code == 409
    assert other.call(123456).status_code == 404


def test_one_call_at_a_time(db: Db, api: TwilioApi, twilio: Twilio, lawyer: Consultant,
                            question_id: int) -> None:
    attempt, _form = started_call(lawyer, api, db, question_id)
    response = lawyer.call(question_id)
    assert response.status_code == 409
    assert page(response).headings == ["Call in progress"]
    assert len(api.calls()) == 1
    assert 'disabled' in section(lawyer.panel(question_id), "callback-status") or \
        re.search(r'class="call-button" disabled', lawyer.panel(question_id))
    sid = attempt.consultant_call_sid
    assert sid is not None
    twilio.post(f"/callbacks/{attempt.id}/status/consultant", leg_form(sid, "no-answer"))
    assert section(lawyer.panel(question_id), "call-state") == \
        "Ended: you did not answer your phone."
    assert load_question(db, question_id).first_callback_at is None
    assert lawyer.call(question_id).status_code == 303
    assert len(api.calls()) == 2


def test_a_call_with_no_news_from_twilio_stops_blocking(db: Db, api: TwilioApi,
                                                        lawyer: Consultant,
                                                        question_id: int) -> None:
    attempt, _form = started_call(lawyer, api, db, question_id)
    with db() as session:
        stuck = session.get(CallbackAttempt, attempt.id)
        assert stuck is not None
        stuck.updated_at = datetime.now(UTC) - timedelta(minutes=11)
    assert "No news from Twilio" in section(lawyer.panel(question_id), "call-state")
    assert lawyer.call(question_id).status_code == 303
    first, second = attempts(db, question_id)
    assert first.state == "ended" and first.error == "no news from Twilio about this call"
    assert second.state == "dialing"


@pytest.mark.parametrize("hook", ["answer", "dialed", "status/consultant", "status/resident"])
@pytest.mark.parametrize("signature", ["", "bm90IGEgc2lnbmF0dXJl"])
def test_unsigned_webhooks_are_refused_and_change_nothing(
        db: Db, api: TwilioApi, twilio: Twilio, lawyer: Consultant, question_id: int,
        hook: str, signature: str) -> None:
    attempt, _form = started_call(lawyer, api, db, question_id)
    sid = attempt.consultant_call_sid
    assert sid is not None
    with db() as session:
        before = row_counts(session)
    form = {**leg_form(sid, "completed"), "DialCallStatus": "completed", "ParentCallSid": sid}
    response = twilio.post(f"/callbacks/{attempt.id}/{hook}", form, signature=signature)
    assert response.status_code == 403
    with db() as session:
        assert row_counts(session) == before
    [same] = attempts(db, question_id)
    assert (same.state, same.consultant_status, same.resident_status, same.updated_at) == (
        attempt.state, attempt.consultant_status, attempt.resident_status, attempt.updated_at)


def test_webhooks_for_an_unknown_attempt_change_nothing(db: Db, twilio: Twilio,
                                                        question_id: int) -> None:
    with db() as session:
        before = row_counts(session)
    sid = new_sid("CA")
    answer = twiml(twilio.post("/callbacks/999/answer", leg_form(sid, "in-progress")))
    assert [child.tag for child in answer] == ["Hangup"]
    dialed = twiml(twilio.post("/callbacks/999/dialed", {**leg_form(sid, "in-progress"),
                                                          "DialCallStatus": "completed"}))
    assert [child.tag for child in dialed] == ["Hangup"]
    assert twilio.post("/callbacks/999/status/consultant",
                       leg_form(sid, "ringing")).status_code == 404
    assert twilio.post("/callbacks/999/status/resident",
                       resident_form(sid, sid, "ringing")).status_code == 404
    with db() as session:
        assert row_counts(session) == before


def test_webhooks_of_another_call_and_malformed_ones_are_ignored(
        db: Db, api: TwilioApi, twilio: Twilio, lawyer: Consultant, question_id: int) -> None:
    attempt, form = started_call(lawyer, api, db, question_id)
    stranger = new_sid("CA")
    answer = twiml(twilio.post_url(form["Url"], leg_form(stranger, "in-progress")))
    assert [child.tag for child in answer] == ["Hangup"]
    assert twilio.post(f"/callbacks/{attempt.id}/status/consultant",
                       leg_form(stranger, "completed")).status_code == 204
    for bad in ({"CallSid": "CA123", "CallStatus": "ringing"},
                leg_form(stranger, "<ringing>"), leg_form(stranger, "")):
        assert twilio.post(f"/callbacks/{attempt.id}/status/consultant",
                           bad).status_code == 400
    [same] = attempts(db, question_id)
    assert (same.state, same.consultant_status) == ("dialing", "queued")


# -- outcomes ---------------------------------------------------------------------------------

def test_resolved_closes_the_question(db: Db, api: TwilioApi, twilio: Twilio,
                                      lawyer: Consultant, question_id: int) -> None:
    attempt, _form = started_call(lawyer, api, db, question_id)
    response = lawyer.outcome(question_id, "resolved")
    assert response.status_code == 303 and response.headers["Location"] == "/queue"
    question = load_question(db, question_id)
    assert (question.status, question.close_reason) == ("closed", "resolved")
    assert question.closed_at is not None and question.closed_by_id is not None
    assert question.claimed_by_id is None
    [done] = attempts(db, question_id)
    assert done.outcome == "resolved" and done.state == "ended"  # no news: ended by the form
    [outcome] = events(db, audit.OUTCOME)
    assert outcome.detail["outcome"] == "resolved" and outcome.detail["attempt_id"] == attempt.id
    [closed] = events(db, audit.CLOSED)
    assert closed.detail == {"reason": "resolved"}
    assert f"Question {question_id} is closed: resolved." in lawyer.notices()
    # Closed: no more forms, and no more outcomes.
    assert lawyer.outcome(question_id, "resolved").status_code == 409
    html = lawyer.panel(question_id)
    assert 'id="outcome-form"' not in html and 'id="call-form"' not in html


def test_a_referral_written_with_another_outcome_is_kept(
        db: Db, lawyer: Consultant, question_id: int) -> None:
    """Only follow-up needs a referral, but one written with "resolved" is not dropped."""
    referral = "Направлена в отдел занятости акимата"
    assert lawyer.outcome(question_id, "resolved", referral).status_code == 303
    question = load_question(db, question_id)
    assert (question.status, question.referral) == ("closed", referral)
    [outcome] = events(db, audit.OUTCOME)
    assert outcome.detail["referral"] == referral


def test_wrong_number_closes_the_question(db: Db, lawyer: Consultant,
                                          question_id: int) -> None:
    # Not unasked without a call that rang someone (the quick close asks first).
    assert lawyer.outcome(question_id, "wrong_number").status_code == 409
    assert load_question(db, question_id).status == "claimed"
    assert lawyer.outcome(question_id, "wrong_number", own_phone=True).status_code == 303
    question = load_question(db, question_id)
    assert (question.status, question.close_reason) == ("closed", "wrong_number")
    assert f"Question {question_id} is closed: wrong number." in lawyer.notices()


def test_follow_up_needs_a_referral_and_returns_the_question_to_the_queue(
        db: Db, lawyer: Consultant, question_id: int) -> None:
    refused = lawyer.outcome(question_id, "follow_up", "   ")
    assert refused.status_code == 400
    assert "which organisation" in refused.get_data(as_text=True)
    assert load_question(db, question_id).status == "claimed"
    assert lawyer.outcome(question_id, "maybe").status_code == 400
    assert lawyer.outcome(question_id, "").status_code == 400
    assert events(db, audit.OUTCOME) == []

    referral = "Бесплатная юридическая консультация при ЦОН Жамбылского района, каб. 12"
    assert lawyer.outcome(question_id, "follow_up", referral).status_code == 303
    question = load_question(db, question_id)
    assert (question.status, question.claimed_by_id, question.referral) == (
        "waiting", None, referral)
    assert question.closed_at is None and question.callback_attempts == 0
    [outcome] = events(db, audit.OUTCOME)
    assert outcome.detail["referral"] == referral
    assert events(db, audit.CLOSED) == []
    assert "back in the queue with the referral noted" in lawyer.notices()
    # The next consultant sees the referral.
    lawyer.claim(question_id)
    html = lawyer.panel(question_id)
    assert referral in html


def no_answer_at(monkeypatch: pytest.MonkeyPatch, lawyer: Consultant, question_id: int,
                 local: datetime) -> TestResponse:
    """Claim the question and record "no answer" at a given Almaty time (a call from the
    lawyer's own phone: the hotline's calls are not what these tests are about)."""
    assert lawyer.claim(question_id).status_code == 303
    with monkeypatch.context() as patch:
        patch.setattr(callbacks, "utcnow", lambda: local.astimezone(UTC))
        return lawyer.outcome(question_id, "no_answer", own_phone=True)


def test_no_answer_retries_in_daytime_then_closes_and_tells_the_resident_by_sms(
        db: Db, api: TwilioApi, lawyer: Consultant, monkeypatch: pytest.MonkeyPatch) -> None:
    question_id = make_question(db)
    start = load_question(db, question_id).priority_at
    assert start is not None

    # First failure at 18:30 Almaty: 2 hours later is 20:30, outside 9-20: next morning.
    response = no_answer_at(monkeypatch, lawyer, question_id,
                            datetime(FUTURE, 3, 2, 18, 30, tzinfo=ALMATY))
    assert response.status_code == 303 and response.headers["Location"] == "/queue"
    question = load_question(db, question_id)
    assert question.status == "waiting" and question.claimed_by_id is None
    assert question.callback_attempts == 1
    assert question.next_callback_at == datetime(FUTURE, 3, 3, 9, 0, tzinfo=ALMATY)
    assert question.priority_at is not None and question.priority_at < start
    assert (f"No answer (attempt 1 of 3). Question {question_id} is back in the queue; next "
            "try after 2031-03-03 09:00 (Almaty).") in lawyer.notices()
    [outcome] = events(db, audit.OUTCOME)
    assert outcome.detail["next_callback_at"] == "2031-03-03T04:00:00+00:00"

    # Calling before the planned time is allowed, with a warning.
    lawyer.claim(question_id)
    html = lawyer.panel(question_id)
    assert "The next try is planned after" in section(html, "callback-status")
    assert lawyer.call(question_id).status_code == 303
    assert "you are calling earlier" in lawyer.notices()
    [called] = events(db, audit.CALLED)
    assert called.detail["retry_planned_for"] == "2031-03-03T04:00:00+00:00"

    # Second failure at 10:00 the next day: the day after, from its window's start.
    no_answer_at(monkeypatch, lawyer, question_id, datetime(FUTURE, 3, 3, 10, 0, tzinfo=ALMATY))
    question = load_question(db, question_id)
    assert question.callback_attempts == 2
    assert question.next_callback_at == datetime(FUTURE, 3, 4, 9, 0, tzinfo=ALMATY)
    [called_back] = attempts(db, question_id)  # the call made between: its outcome, ended
    assert (called_back.outcome, called_back.state) == ("no_answer", "ended")
    assert api.sent() == []

    # The third failure closes the question and sends the resident the final SMS.
    no_answer_at(monkeypatch, lawyer, question_id, datetime(FUTURE, 3, 4, 10, 5, tzinfo=ALMATY))
    question = load_question(db, question_id)
    assert (question.status, question.close_reason, question.callback_attempts) == (
        "closed", "no_answer", 3)
    assert question.next_callback_at is None
    with db() as session:
        [message] = session.scalars(select(SmsMessage)).all()
        assert (message.direction, message.phone, message.question_id, message.sent_by_id,
                message.language) == ("out", CALLER, question_id, None, "ru")
        assert message.purpose == "gave_up"
        assert "попыток: 3" in message.body and HOTLINE in message.body
        assert message.segments is not None and message.segments <= 2
        # The job reached Twilio's Messages.json.
        assert message.message_sid is not None and message.status == "queued"
    [sent] = api.sent()
    assert sent["To"] == CALLER and sent["From"] == HOTLINE and sent["Body"] == message.body
    assert sent["StatusCallback"] == f"{BASE_URL}/sms/status"
    [closed] = events(db, audit.CLOSED)
    assert closed.detail == {"reason": "no_answer"}
    [sms_event] = events(db, audit.SMS_SENT)
    assert sms_event.detail["automatic"] is True and sms_event.detail["message_id"] == message.id
    assert (f"No answer after 3 attempts: question {question_id} is closed and the resident "
            "gets an SMS saying how to reach us.") in lawyer.notices()


def test_the_final_sms_is_in_kazakh_for_a_kazakh_resident(
        db: Db, api: TwilioApi, app: Flask, lawyer: Consultant,
        monkeypatch: pytest.MonkeyPatch) -> None:
    rt = app.extensions["hotline"]
    rt.settings = rt.settings.override(callback_attempts=1)
    question_id = make_question(db, language="kk")
    no_answer_at(monkeypatch, lawyer, question_id, datetime(FUTURE, 3, 2, 12, 0, tzinfo=ALMATY))
    [sent] = api.sent()
    assert sent["Body"].startswith("Халық Үні: заңгер сізге 1 рет")
    assert HOTLINE in sent["Body"]


def opt_out(app: Flask, db: Db, where: str) -> None:
    """The question's resident said STOP: on their record, or on the record retention
    pseudonymised before they came back (storage.sms.opted_out)."""
    with db() as session:
        caller = session.scalars(select(Caller)).one()
        if where == "record":
            caller.sms_opted_out = True
        else:
            key = app.extensions["hotline"].pseudonym_key
            session.add(Caller(phone=pseudonym(caller.phone, key), sms_opted_out=True,
                               first_seen=caller.first_seen, last_seen=caller.first_seen))


@pytest.mark.parametrize("where", ["record", "pseudonymised record"])
def test_no_sms_to_an_opted_out_resident(db: Db, api: TwilioApi, app: Flask,
                                         lawyer: Consultant,
                                         monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    rt = app.extensions["hotline"]
    rt.settings = rt.settings.override(callback_attempts=1)
    question_id = make_question(db)
    opt_out(app, db, where)
    assert "opted out of SMS, so no SMS was sent" in last_try_sends_no_sms(
        db, api, lawyer, monkeypatch, question_id)


def last_try_sends_no_sms(db: Db, api: TwilioApi, lawyer: Consultant,
                          monkeypatch: pytest.MonkeyPatch, question_id: int) -> str:
    """Record the last allowed "no answer" (callback_attempts=1): the question closes and no
    "we tried" SMS is stored or sent; return the notice the consultant sees."""
    no_answer_at(monkeypatch, lawyer, question_id, datetime(2026, 3, 2, 12, 0, tzinfo=ALMATY))
    question = load_question(db, question_id)
    assert (question.status, question.close_reason) == ("closed", "no_answer")
    with db() as session:
        assert session.scalars(select(SmsMessage)).all() == []
    assert api.requests == []
    return lawyer.notices()


def test_no_sms_to_a_landline(db: Db, api: TwilioApi, app: Flask, lawyer: Consultant,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A resident who called from a landline (an Almaty-region fixed number): the SMS form is
    not offered, an SMS written anyway comes back to copy, and after the last failed attempt
    no "we tried to call you" SMS goes to a number it cannot reach; the consultant is told."""
    rt = app.extensions["hotline"]
    rt.settings = rt.settings.override(callback_attempts=1)
    question_id = make_question(db, phone="+77252123456")
    lawyer.claim(question_id)
    panel = lawyer.panel(question_id)
    assert "landline" in section(panel, "sms-answer") and 'id="sms-form"' not in panel
    refused = lawyer.sms(question_id, "Обратитесь в ЦОН")
    assert refused.status_code == 400 and "landline" in refused.get_data(as_text=True)
    assert draft(refused, "sms-draft") == "Обратитесь в ЦОН"
    assert "the resident's number is a landline" in last_try_sends_no_sms(
        db, api, lawyer, monkeypatch, question_id)


# -- one call, several questions of one resident ---------------------------------------------

def ticked(html: str) -> list[str]:
    """The other questions the outcome form ticks (checked "also" boxes), as a browser sends."""
    return re.findall(r'<input type="checkbox" name="also" value="(\d+)" checked>', html)


def test_one_outcome_answers_the_residents_other_questions_held_too(
        app: Flask, db: Db, lawyer: Consultant) -> None:
    """The lawyer took a resident's second question too: the outcome form offers it ticked,
    and one "resolved" closes both; a question of someone else, or one not held, is refused
    with nothing written."""
    first, second = make_question(db), make_question(db)
    stranger = make_question(db, phone="+77017654321")
    waiting = make_question(db)  # the same resident's, not taken
    for question_id in (first, second, stranger):
        assert lawyer.claim(question_id).status_code == 303
    shown = lawyer.panel(first)
    assert ticked(shown) == [str(second)]  # not the stranger's, not the one not held
    assert f"Question {second}" in section(shown, "outcome-also")
    assert 'id="outcome-also"' not in lawyer.panel(stranger)  # alone: nothing to offer

    for wrong, status in (([str(stranger)], 409), ([str(waiting)], 409), (["x"], 400),
                          ([str(second), "-1"], 400), ([str(second)] * 21, 400)):
        refused = lawyer.outcome(first, "resolved", also=wrong)
        assert refused.status_code == status, wrong
        if status == 400:
            assert "other questions was not understood" in html.unescape(
                refused.get_data(as_text=True))
    assert {load_question(db, q).status for q in (first, second, stranger)} == {"claimed"}
    assert events(db, audit.OUTCOME) == [] and events(db, audit.CLOSED) == []

    assert lawyer.outcome(first, "resolved", also=ticked(shown)).status_code == 303
    for question_id in (first, second):
        question = load_question(db, question_id)
        assert (question.status, question.close_reason) == ("closed", "resolved")
        assert question.first_callback_at is not None
    assert load_question(db, stranger).status == "claimed"
    assert load_question(db, waiting).status == "waiting"
    outcomes = {event.question_id: event.detail for event in events(db, audit.OUTCOME)}
    assert outcomes[first].get("with_question") is None
    assert outcomes[second]["with_question"] == first and outcomes[second]["outcome"] == "resolved"
    assert {event.question_id for event in events(db, audit.CLOSED)} == {first, second}
    notices = lawyer.notices()
    assert f"Question {first} is closed: resolved." in notices
    assert f"The same outcome was written for the resident's other questions: {second}." in notices


def test_an_unticked_question_stays_with_the_lawyer(db: Db, lawyer: Consultant) -> None:
    first, second = make_question(db), make_question(db)
    lawyer.claim(first)
    lawyer.claim(second)
    referral = "Отдел занятости и социальных программ акимата"
    assert lawyer.outcome(first, "follow_up", referral).status_code == 303  # also: none
    assert load_question(db, first).status == "waiting"
    untouched = load_question(db, second)
    assert (untouched.status, untouched.referral) == ("claimed", None)
    assert [event.question_id for event in events(db, audit.OUTCOME)] == [first]


def one_try_left(app: Flask, db: Db, last: int = 0) -> tuple[int, int]:
    """Two questions of one resident, 3 attempts allowed; the first (last=0) or the second
    (last=1) has had two failed tries already."""
    rt = app.extensions["hotline"]
    rt.settings = rt.settings.override(callback_attempts=3)
    pair = make_question(db), make_question(db)
    with db() as session:
        question = session.get(Question, pair[last])
        assert question is not None
        question.callback_attempts = 2
    return pair


def one_at_its_last_try(app: Flask, db: Db, lawyer: Consultant,
                        last: int) -> tuple[int, int]:
    """Two questions of one resident, both held by the lawyer, with 3 attempts allowed; the
    first (last=0) or the second (last=1) has had two failed tries already."""
    pair = one_try_left(app, db, last)
    for question_id in pair:
        assert lawyer.claim(question_id).status_code == 303
    return pair


def test_reaching_the_resident_starts_the_count_of_failed_attempts_again(
        db: Db, api: TwilioApi, lawyer: Consultant, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two calls unanswered, then one that reached the resident (follow-up): a later "no
    answer" is the first of a new count, not the last, so nothing is closed and no "we could
    not reach you" SMS goes to someone a lawyer has just spoken to."""
    question_id = make_question(db)
    for day in (3, 4):
        no_answer_at(monkeypatch, lawyer, question_id,
                     datetime(FUTURE, 3, day, 10, 0, tzinfo=ALMATY))
    assert load_question(db, question_id).callback_attempts == 2
    lawyer.claim(question_id)
    assert lawyer.outcome(question_id, "follow_up", "ЦОН, каб. 12").status_code == 303
    question = load_question(db, question_id)
    assert question.callback_attempts == 0
    no_answer_at(monkeypatch, lawyer, question_id, datetime(FUTURE, 3, 6, 10, 0, tzinfo=ALMATY))
    question = load_question(db, question_id)
    assert (question.status, question.callback_attempts) == ("waiting", 1)
    assert api.sent() == []


def test_no_answer_counts_for_each_and_the_final_sms_waits_for_the_last(
        app: Flask, db: Db, api: TwilioApi, lawyer: Consultant,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The older question has had two failed tries, the newer none: a third failure closes the
    older, plans a retry of the newer, and sends no "we gave up" SMS, since the resident will
    be called again; when the newer one gives up too, one SMS goes."""
    rt = app.extensions["hotline"]
    older, newer = one_at_its_last_try(app, db, lawyer, last=0)
    no_answer = datetime(FUTURE, 3, 2, 12, 0, tzinfo=ALMATY)
    with monkeypatch.context() as patch:
        patch.setattr(callbacks, "utcnow", lambda: no_answer.astimezone(UTC))
        assert lawyer.outcome(older, "no_answer", also=ticked(lawyer.panel(older)),
                              own_phone=True).status_code == 303
    closed, retried = load_question(db, older), load_question(db, newer)
    assert (closed.status, closed.close_reason, closed.callback_attempts) == (
        "closed", "no_answer", 3)
    assert (retried.status, retried.callback_attempts) == ("waiting", 1)
    assert retried.next_callback_at == datetime(FUTURE, 3, 2, 14, 0, tzinfo=ALMATY)
    with db() as session:
        assert session.scalars(select(SmsMessage)).all() == []
    assert (f"question {older} is closed. No SMS was sent: the resident's other question will "
            "be tried again.") in lawyer.notices()

    rt.settings = rt.settings.override(callback_attempts=1)
    third = make_question(db)
    lawyer.claim(newer)
    lawyer.claim(third)
    assert lawyer.outcome(newer, "no_answer", also=ticked(lawyer.panel(newer)),
                          own_phone=True).status_code == 303
    assert {load_question(db, q).close_reason for q in (newer, third)} == {"no_answer"}
    [sent] = api.sent()
    assert sent["To"] == CALLER
    with db() as session:
        [message] = session.scalars(select(SmsMessage)).all()
        assert message.question_id == newer


def test_no_we_gave_up_sms_while_an_unticked_question_will_be_called(
        app: Flask, db: Db, api: TwilioApi, lawyer: Consultant,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The resident's other question waits for its retry but is not ticked on the form: the
    last failure of this one sends no "we gave up" SMS, and the other's last one sends one."""
    first, second = one_try_left(app, db)
    no_answer_at(monkeypatch, lawyer, second, datetime(FUTURE, 3, 2, 10, 0, tzinfo=ALMATY))
    no_answer_at(monkeypatch, lawyer, first, datetime(FUTURE, 3, 2, 11, 0, tzinfo=ALMATY))
    assert load_question(db, first).status == "closed"
    assert api.sent() == []
    assert (f"question {first} is closed. No SMS was sent: the resident's other question will "
            "be tried again.") in lawyer.notices()
    for day in (3, 4):
        no_answer_at(monkeypatch, lawyer, second, datetime(FUTURE, 3, day, 12, 0,
                                                           tzinfo=ALMATY))
    assert load_question(db, second).status == "closed"
    [sent] = api.sent()
    assert sent["To"] == CALLER


def held_back_we_tried_sms(app: Flask, db: Db, lawyer: Consultant,
                           monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    """An elderly resident called twice: the last try on the first question fails while the
    second (a silent recording) waits, so the "we tried" SMS is held back; (first, second)."""
    first, second = one_try_left(app, db)
    no_answer_at(monkeypatch, lawyer, first, datetime(FUTURE, 3, 2, 11, 0, tzinfo=ALMATY))
    assert "will be tried again" in lawyer.notices()
    return first, second


def quick_close(lawyer: Consultant, question_id: int, reason: str) -> None:
    assert lawyer.claim(question_id).status_code == 303
    closed = lawyer.browser.post(f"/questions/{question_id}/close",
                                 {"csrf_token": lawyer.token(), "reason": reason})
    assert closed.status_code == 303


@pytest.mark.parametrize("reason", ["silence", "test_call"])
def test_the_held_back_we_tried_sms_goes_when_the_other_question_is_closed_unasked(
        app: Flask, db: Db, api: TwilioApi, lawyer: Consultant,
        monkeypatch: pytest.MonkeyPatch, reason: str) -> None:
    """The second question turns out silent and is closed without a conversation: nothing
    will be called any more, so the resident is told now, once, how to reach us."""
    first, second = held_back_we_tried_sms(app, db, lawyer, monkeypatch)
    assert api.sent() == []
    quick_close(lawyer, second, reason)
    [sent] = api.sent()
    assert sent["To"] == CALLER and "+77000000000" in sent["Body"]
    with db() as session:
        [message] = session.scalars(select(SmsMessage)).all()
        assert (message.question_id, message.purpose) == (first, "gave_up")
    assert [e.question_id for e in events(db, audit.SMS_SENT)] == [first]
    # Another question closed unasked later on owes nothing more.
    third = make_question(db)
    quick_close(lawyer, third, reason)
    assert len(api.sent()) == 1


def test_a_last_try_and_a_quick_close_at_the_same_moment_send_the_sms_once(
        app: Flask, db: Db, api: TwilioApi, lawyer: Consultant) -> None:
    """The last failed try on one question (its transaction here: the resident's row locked
    first, as the outcome form locks it, and the question closed as no answer) while the
    lawyer, in another tab, closes the resident's other question as silence: the close waits
    for it and sends the "we tried" SMS. Without the close locking the resident too, on
    PostgreSQL each saw the other question open and neither sent it."""
    first, second = make_question(db), make_question(db)
    assert lawyer.claim(second).status_code == 303

    def last_try(session: Session) -> None:
        lock_resident_of(session, first)
        question = session.get(Question, first)
        assert question is not None
        question.callback_attempts = 3
        close_question(question, None, "no_answer", datetime.now(UTC))
        session.flush()

    with held_meanwhile(db, last_try):
        closed = lawyer.browser.post(f"/questions/{second}/close",
                                     {"csrf_token": lawyer.token(), "reason": "silence"})
    assert closed.status_code == 303
    [sent] = api.sent()
    assert sent["To"] == CALLER and "попыток: 3" in sent["Body"]


@pytest.mark.parametrize("reason", ["wrong_number", "abusive"])
def test_no_held_back_sms_after_a_wrong_number_or_abuse(
        app: Flask, db: Db, api: TwilioApi, lawyer: Consultant,
        monkeypatch: pytest.MonkeyPatch, reason: str) -> None:
    """Nor for a question asked later (months later, a silent recording): the SMS was held
    back for the question open at the last try, and it is gone."""
    _first, second = held_back_we_tried_sms(app, db, lawyer, monkeypatch)
    quick_close(lawyer, second, reason)
    assert api.sent() == []
    later = make_question(db)
    with db() as session:
        question = session.get(Question, later)
        assert question is not None
        question.created_at = datetime(FUTURE, 6, 1, 12, 0, tzinfo=ALMATY)
    quick_close(lawyer, later, "silence")
    assert api.sent() == []


def test_no_held_back_sms_once_the_resident_was_reached(
        app: Flask, db: Db, api: TwilioApi, lawyer: Consultant,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The second question was answered (resolved) while a third waited: the resident was
    reached, so closing the third unasked sends no "we could not reach you"."""
    _first, second = held_back_we_tried_sms(app, db, lawyer, monkeypatch)
    third = make_question(db)
    assert lawyer.claim(second).status_code == 303
    with monkeypatch.context() as patch:
        patch.setattr(callbacks, "utcnow",
                      lambda: datetime(FUTURE, 3, 2, 12, 0, tzinfo=ALMATY).astimezone(UTC))
        assert lawyer.outcome(second, "resolved", own_phone=True).status_code == 303
    quick_close(lawyer, third, "silence")
    assert api.sent() == []


def test_resolved_is_refused_while_the_only_sms_answer_was_refused_by_twilio(
        db: Db, api: TwilioApi, lawyer: Consultant, question_id: int) -> None:
    """Twilio refuses the SMS answer within seconds (here: SMS not enabled for the region),
    before the lawyer clicks Resolved: the question is not closed with nothing said (409,
    nothing written). Once reached (ticked: by their own phone), it may be."""
    api.fail_next(twilio_error(400, 21408, "Permission to send an SMS has not been enabled"))
    assert lawyer.sms(question_id, "Пенсию назначают в ЦОН.").status_code == 303
    with db() as session:
        assert session.scalars(select(SmsMessage)).one().status == "failed"
    refused = lawyer.outcome(question_id, "resolved")
    assert refused.status_code == 409
    assert "did not reach the resident" in refused.get_data(as_text=True)
    assert load_question(db, question_id).status == "claimed"
    assert events(db, audit.OUTCOME) == []
    assert lawyer.outcome(question_id, "resolved", own_phone=True).status_code == 303
    assert load_question(db, question_id).status == "closed"


def test_resolved_after_an_sms_answer_sent_again_that_went_through(
        db: Db, api: TwilioApi, lawyer: Consultant, question_id: int) -> None:
    api.fail_next(twilio_error(400, 21408, "Permission to send an SMS has not been enabled"))
    lawyer.sms(question_id, "Пенсию назначают в ЦОН.")
    lawyer.sms(question_id, "Пенсию назначают в ЦОН, возьмите паспорт.")
    assert lawyer.outcome(question_id, "resolved").status_code == 303
    assert load_question(db, question_id).status == "closed"


def test_no_answer_cannot_be_written_while_the_resident_is_on_the_line(
        db: Db, api: TwilioApi, twilio: Twilio, lawyer: Consultant, question_id: int) -> None:
    """Connected to the resident, "no answer" is refused (409) and changes nothing; what came
    of the conversation ("resolved") may be written during it."""
    connected_call(lawyer, api, db, twilio, question_id)
    refused = lawyer.outcome(question_id, "no_answer")
    assert refused.status_code == 409
    assert "you are still connected" in refused.get_data(as_text=True)
    question = load_question(db, question_id)
    assert (question.status, question.callback_attempts) == ("claimed", 0)
    [live] = attempts(db, question_id)
    assert (live.state, live.outcome) == ("connected", None)
    assert lawyer.outcome(question_id, "resolved").status_code == 303
    assert load_question(db, question_id).status == "closed"


@pytest.mark.parametrize("chosen", ["no_answer", "wrong_number"])
def test_no_answer_cannot_be_written_while_the_residents_phone_still_rings(
        app: Flask, db: Db, api: TwilioApi, twilio: Twilio, lawyer: Consultant,
        question_id: int, chosen: str) -> None:
    """The lawyer hears it ring for 20 s and writes "no answer"; at 25 s the resident picks
    up. Refused (409) while the resident's phone rings: on the last try the question would
    close and the "we could not reach you" SMS go out during the conversation; on an earlier
    one the question would be released, and the real outcome refused afterwards."""
    rt = app.extensions["hotline"]
    rt.settings = rt.settings.override(callback_attempts=1)
    attempt, form = started_call(lawyer, api, db, question_id)
    sid = attempt.consultant_call_sid
    assert sid is not None
    twiml(twilio.post_url(form["Url"], leg_form(sid, "in-progress", AnsweredBy="human")))
    resident = f"/callbacks/{attempt.id}/status/resident"
    twilio.post(resident, resident_form("CA" + "2" * 32, sid, "ringing"))
    refused = lawyer.outcome(question_id, chosen)
    assert refused.status_code == 409
    assert "still ringing" in refused.get_data(as_text=True)
    twilio.post(resident, resident_form("CA" + "2" * 32, sid, "in-progress"))
    question = load_question(db, question_id)
    assert (question.status, question.callback_attempts) == ("claimed", 0)
    assert api.sent() == [] and events(db, audit.OUTCOME) == []
    assert lawyer.outcome(question_id, "resolved").status_code == 303
    assert load_question(db, question_id).status == "closed"


def test_no_answer_counts_only_a_call_that_rang_the_resident(
        db: Db, api: TwilioApi, twilio: Twilio, lawyer: Consultant, question_id: int) -> None:
    """A failed try counts towards giving up, and the last one's SMS tells the resident that a
    lawyer called them: "no answer" is refused (409, nothing written) without a call that rang
    the resident, the hotline's or one the lawyer says they made from their own phone."""
    def refused() -> None:
        answer = lawyer.outcome(question_id, "no_answer")
        assert answer.status_code == 409
        assert "has not rung the resident" in answer.get_data(as_text=True)
        question = load_question(db, question_id)
        assert (question.status, question.callback_attempts) == ("claimed", 0)
        assert events(db, audit.OUTCOME) == []

    refused()  # no call at all (taps on the form)
    # The hotline's call rang only the lawyer's own phone, which nobody answered.
    attempt, _form = started_call(lawyer, api, db, question_id)
    assert attempt.consultant_call_sid is not None
    twilio.post(f"/callbacks/{attempt.id}/status/consultant",
                leg_form(attempt.consultant_call_sid, "no-answer"))
    refused()
    # "I called from my own phone" ticked: counted, and the audit log says how.
    assert lawyer.outcome(question_id, "no_answer", own_phone=True).status_code == 303
    assert load_question(db, question_id).callback_attempts == 1
    [counted] = events(db, audit.OUTCOME)
    assert counted.detail["own_phone"] is True
    # The hotline's call rang the resident, who did not pick up: counted as it is.
    assert lawyer.claim(question_id).status_code == 303
    resident_rung(lawyer, api, db, twilio, question_id, "no-answer")
    assert lawyer.outcome(question_id, "no_answer").status_code == 303
    assert load_question(db, question_id).callback_attempts == 2
    assert "own_phone" not in events(db, audit.OUTCOME)[-1].detail


def test_a_ticked_question_at_its_last_try_closes_and_is_named(
        app: Flask, db: Db, api: TwilioApi, lawyer: Consultant,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The question on the page still has tries, a ticked one had its last: that one closes,
    the notice names it, and no "we gave up" SMS goes (the resident will be called again)."""
    on_page, ticked_one = one_at_its_last_try(app, db, lawyer, last=1)
    with monkeypatch.context() as patch:
        patch.setattr(callbacks, "utcnow", lambda: datetime(FUTURE, 3, 2, 12, 0,
                                                            tzinfo=ALMATY).astimezone(UTC))
        assert lawyer.outcome(on_page, "no_answer", also=ticked(lawyer.panel(on_page)),
                              own_phone=True).status_code == 303
    assert load_question(db, on_page).status == "waiting"
    assert (load_question(db, ticked_one).status,
            load_question(db, ticked_one).close_reason) == ("closed", "no_answer")
    assert f"No answer after the last try: question(s) {ticked_one} closed too." in (
        lawyer.notices())
    assert api.sent() == []


def test_the_audit_log_says_which_call_answered_a_question(app: Flask, db: Db,
                                                           lawyer: Consultant) -> None:
    first, second = make_question(db), make_question(db)
    lawyer.claim(first)
    lawyer.claim(second)
    lawyer.outcome(first, "wrong_number", also=[str(second)], own_phone=True)
    add_account(app, "dana@example.kz", role="coordinator", name="Dana")
    coordinator = Consultant(app, "dana@example.kz")
    log = coordinator.browser.get(f"/admin/audit?question={second}").get_data(as_text=True)
    assert f"in the same call as question {first}" in log


# -- SMS answers ------------------------------------------------------------------------------

def test_an_sms_answer_with_its_delivery_status(db: Db, api: TwilioApi, twilio: Twilio,
                                                lawyer: Consultant, question_id: int) -> None:
    body = "Здравствуйте! Пенсию назначают с 63 лет. Обратитесь в ЦОН с удостоверением."
    response = lawyer.sms(question_id, body)
    assert response.status_code == 303
    assert response.headers["Location"] == f"/questions/{question_id}#sms-answer"
    with db() as session:
        [message] = session.scalars(select(SmsMessage)).all()
        user = session.scalars(select(User)).one()
        assert (message.body, message.question_id, message.sent_by_id, message.phone) == (
            body, question_id, user.id, CALLER)
        assert message.message_sid is not None  # the job sent it
        sid = message.message_sid
    [sent] = api.sent()
    assert sent["Body"] == body and sent["To"] == CALLER
    [event] = events(db, audit.SMS_SENT)
    assert event.detail == {"message_id": message.id, "segments": 2, "encoding": "UCS-2"}
    html = lawyer.panel(question_id)
    thread = section(html, "sms-thread")
    assert body in thread and "Aigerim Nurlanovna" in thread
    assert "waiting to be sent" in section(html, f"sms-{message.id}")
    assert polls(html, "sms-thread")

    def status(value: str, **extra: str) -> None:
        response = twilio.post("/sms/status", {
            "MessageSid": sid, "MessageStatus": value, "AccountSid": ACCOUNT_SID,
            "From": HOTLINE, "To": CALLER, **extra})
        assert response.status_code == 204

    status("sent")
    assert "sent, waiting for delivery" in section(lawyer.panel(question_id), f"sms-{message.id}")
    status("delivered")
    html = lawyer.panel(question_id)
    assert section(html, f"sms-{message.id}").endswith(f"delivered {body}")
    assert not polls(html, "sms-thread")


def test_a_resident_who_keeps_writing_does_not_push_the_answer_off_the_list(
        db: Db, api: TwilioApi, lawyer: Consultant, question_id: int) -> None:
    """More SMS than the panel lists (SMS_SHOWN): the latest are shown, the consultant's answer
    and its status among them, and the panel says that earlier ones are not."""
    start = datetime.now(UTC) - timedelta(hours=1)
    with db() as session:
        question = session.get(Question, question_id)
        assert question is not None
        question.created_at = start
        session.add_all(
            SmsMessage(direction=SMS_IN, caller_id=question.caller_id, phone=CALLER,
                       body=f"когда позвоните {n}", status="received",
                       created_at=start + timedelta(seconds=n + 1))
            for n in range(callbacks.SMS_SHOWN + 1))
    lawyer.claim(question_id)
    assert lawyer.sms(question_id, "Позвоним завтра утром.").status_code == 303
    thread = section(lawyer.panel(question_id), "sms-thread")
    assert "Позвоним завтра утром." in thread
    assert f"когда позвоните {callbacks.SMS_SHOWN}" in thread  # the latest the resident wrote
    assert "когда позвоните 1 " not in thread and "когда позвоните 0 " not in thread
    assert thread.count("когда позвоните") == callbacks.SMS_SHOWN - 1
    assert f"Earlier SMS are not shown: these are the latest {callbacks.SMS_SHOWN}." in thread


def test_an_undelivered_sms_shows_twilios_error(db: Db, api: TwilioApi, twilio: Twilio,
                                                lawyer: Consultant, question_id: int) -> None:
    lawyer.sms(question_id, "Hello")
    with db() as session:
        message = session.scalars(select(SmsMessage)).one()
    twilio.post("/sms/status", {"MessageSid": message.message_sid or "", "AccountSid": ACCOUNT_SID,
                                "MessageStatus": "undelivered", "ErrorCode": "30003"})
    assert ("not delivered (Twilio error 30003: the phone is switched off or out of coverage)"
            in section(lawyer.panel(question_id), f"sms-{message.id}"))


def test_a_resolved_question_whose_sms_answer_did_not_arrive_goes_back_to_the_queue(
        app: Flask, db: Db, api: TwilioApi, twilio: Twilio, lawyer: Consultant,
        question_id: int) -> None:
    """Answered by SMS and closed as resolved, then Twilio reports the SMS undelivered (the
    phone off for days): the resident has no answer, so the question is back in the queue,
    by "the system" in the audit log. Not when another answer reached them, nor a question
    closed for another reason."""
    def undelivered(question: int) -> None:
        with db() as session:
            message = session.scalars(select(SmsMessage).where(
                SmsMessage.question_id == question).order_by(SmsMessage.id.desc())).first()
            assert message is not None and message.message_sid is not None
            sid = message.message_sid
        assert twilio.post("/sms/status", {
            "MessageSid": sid, "AccountSid": ACCOUNT_SID, "From": HOTLINE, "To": CALLER,
            "MessageStatus": "undelivered", "ErrorCode": "30003"}).status_code == 204

    assert lawyer.sms(question_id, "Пенсию назначают в ЦОН по месту жительства.").status_code \
        == 303
    assert lawyer.outcome(question_id, "resolved").status_code == 303
    assert load_question(db, question_id).status == "closed"
    undelivered(question_id)
    question = load_question(db, question_id)
    assert (question.status, question.close_reason, question.closed_at) == (
        "waiting", None, None)
    [reopened] = events(db, audit.REOPENED)
    assert reopened.user_id is None and reopened.question_id == question_id
    assert reopened.detail["sms_id"] > 0
    # The second answer, by SMS too, reaches them; a late failure of the first changes nothing.
    lawyer.claim(question_id)
    lawyer.sms(question_id, "Позвоните нам, если остались вопросы.")
    assert lawyer.outcome(question_id, "resolved").status_code == 303
    with db() as session:
        first = session.scalars(select(SmsMessage).where(
            SmsMessage.question_id == question_id).order_by(SmsMessage.id)).first()
        assert first is not None and first.message_sid is not None
        first.status = "sent"  # as if its failure came late
    assert twilio.post("/sms/status", {
        "MessageSid": first.message_sid, "AccountSid": ACCOUNT_SID, "From": HOTLINE,
        "To": CALLER, "MessageStatus": "failed", "ErrorCode": "30003"}).status_code == 204
    assert load_question(db, question_id).status == "closed"
    # Closed as a wrong number: the SMS was not its answer.
    other = make_question(db)
    lawyer.claim(other)
    lawyer.sms(other, "Вы ошиблись номером?")
    assert lawyer.outcome(other, "wrong_number", own_phone=True).status_code == 303
    undelivered(other)
    assert load_question(db, other).status == "closed"
    assert len(events(db, audit.REOPENED)) == 1
    # Twilio repeats the callback after the reopened question was settled again (a lawyer
    # called from their own phone): only the callback that made it undelivered counted.
    third = make_question(db)
    lawyer.claim(third)
    lawyer.sms(third, "Ответ юриста")
    assert lawyer.outcome(third, "resolved").status_code == 303
    undelivered(third)
    assert load_question(db, third).status == "waiting"
    lawyer.claim(third)
    assert lawyer.outcome(third, "resolved").status_code == 409  # no answer reached them yet
    assert lawyer.outcome(third, "resolved", own_phone=True).status_code == 303
    undelivered(third)
    assert load_question(db, third).status == "closed"
    assert len(events(db, audit.REOPENED)) == 2


def test_twilios_own_sms_error_text_is_only_detail(db: Db, api: TwilioApi,
                                                   lawyer: Consultant, question_id: int) -> None:
    twilios_words = "The 'To' number is not a valid phone number."
    api.fail_next(twilio_error(400, 21211, twilios_words))
    assert lawyer.sms(question_id, "Hello").status_code == 303
    with db() as session:
        message = session.scalars(select(SmsMessage)).one()
        assert (message.status, message.error_code) == ("failed", 21211)
    for language, status in (("en", "failed (Twilio error 21211)"),
                             ("ru", "ошибка (ошибка Twilio 21211)")):
        html = lawyer.browser.get(f"/questions/{question_id}/callback-panel?lang={language}"
                                  ).get_data(as_text=True)
        item = re.search(rf'<li[^>]*id="sms-{message.id}".*?</li>', html, re.S)
        assert item
        found = re.search(r'<span class="sms-status[^"]*"[^>]*>([^<]*)</span>'
                          r' <small class="twilio-detail" lang="en">([^<]*)</small>',
                          item.group(0))
        assert found and found.group(1) == status
        assert found.group(2).replace("&#39;", "'") == twilios_words


@pytest.mark.parametrize("where", ["record", "pseudonymised record"])
def test_sms_answers_that_cannot_be_sent_are_refused(app: Flask, db: Db, api: TwilioApi,
                                                     lawyer: Consultant,
                                                     question_id: int, where: str) -> None:
    empty = lawyer.sms(question_id, "   ")
    assert empty.status_code == 400 and "Please write the SMS." in empty.get_data(as_text=True)
    written = "<b>Ответ</b> " + "я" * 390  # 403 letters: 7 parts of 67 UCS-2 units
    long = lawyer.sms(question_id, written)
    assert long.status_code == 400
    assert "This SMS would take 7 parts; at most 6 are allowed." in long.get_data(as_text=True)
    # What the lawyer wrote is not lost: the page gives it back in a form that sends it.
    again = page(long)
    form = f'action="/questions/{question_id}/sms"'
    assert form in long.get_data(as_text=True)
    assert draft(long, "sms-body") == written
    # In the question page's panel style, on a phone too (callbacks.css), not a bare form.
    assert 'href="/static/callbacks.css"' in long.get_data(as_text=True)
    assert re.search(r'<section class="callback-panel" id="draft">\s*<form id="sms-form"',
                     long.get_data(as_text=True))
    shortened = {"csrf_token": again.inputs["csrf_token"], "body": written[:-1]}
    assert lawyer.browser.post(f"/questions/{question_id}/sms", shortened).status_code == 303
    opt_out(app, db, where)
    opted_out = lawyer.sms(question_id, "Hello")
    assert opted_out.status_code == 400
    assert "opted out of SMS" in opted_out.get_data(as_text=True)
    # Nothing to send it with: the text is there to copy, and no form sends it.
    assert draft(opted_out, "sms-draft") == "Hello"
    assert form not in opted_out.get_data(as_text=True)
    assert "opted out of SMS" in section(lawyer.panel(question_id), "sms-answer")
    assert 'id="sms-form"' not in lawyer.panel(question_id)
    with db() as session:
        assert [m.body for m in session.scalars(select(SmsMessage))] == [written[:-1]]
    assert len(api.sent()) == 1


def draft(response: TestResponse, element_id: str) -> str:
    """The text of a page's textarea, as the browser shows it."""
    found = re.search(rf'<textarea id="{element_id}"[^>]*>(.*?)</textarea>',
                      response.get_data(as_text=True), re.S)
    assert found is not None, element_id
    return html.unescape(found.group(1))


def test_the_panel_shows_what_the_resident_wrote(db: Db, lawyer: Consultant,
                                                 question_id: int) -> None:
    with db() as session:
        caller = session.scalars(select(Caller)).one()
        session.add(SmsMessage(direction="in", phone=CALLER, body="Спасибо, жду звонка",
                               caller_id=caller.id, status="received",
                               message_sid=new_sid("SM")))
    thread = section(lawyer.panel(question_id), "sms-thread")
    assert "Resident" in thread and "Спасибо, жду звонка" in thread and "received" in thread
    # Opened alone (not from the question's page), it is in the audit log as an opening,
    # once in the window; polled by the page (htmx), never: a page left open for an hour
    # would write one every 10 minutes.
    lawyer.panel(question_id)
    assert [e.question_id for e in events(db, audit.OPENED)] == [question_id]
    with db() as session:
        for event in session.scalars(select(AuditEvent)):
            event.at -= timedelta(minutes=11)
    polled = lawyer.browser.get(f"/questions/{question_id}/callback-panel",
                                headers={"HX-Request": "true"})
    assert polled.status_code == 200
    assert len(events(db, audit.OPENED)) == 1
    # The header is the client's to send: read so without any opening, it is one.
    other = make_question(db)
    assert lawyer.browser.get(f"/questions/{other}/callback-panel",
                              headers={"HX-Request": "true"}).status_code == 200
    assert [e.question_id for e in events(db, audit.OPENED)] == [question_id, other]


def test_an_answer_held_for_the_morning_says_so(db: Db, lawyer: Consultant,
                                                question_id: int) -> None:
    """An SMS answer whose sending failed in the evening and was tried again after the
    calling hours waits for the morning (hotline.outbound_sms._late): the lawyer reads that,
    not a bare "waiting to be sent" for the whole night."""
    with db() as session:
        caller = session.scalars(select(Caller)).one()
        session.add(SmsMessage(direction="out", phone=CALLER, body="Ответ юриста",
                               caller_id=caller.id, question_id=question_id, status="queued",
                               error_message=WAITING_FOR_MORNING))
    thread = section(lawyer.panel(question_id), "sms-thread")
    assert "waiting for the calling hours: it goes in the morning" in thread


# -- logged out -------------------------------------------------------------------------------

def test_a_logged_out_visitor_can_do_none_of_this(app: Flask, db: Db, api: TwilioApi,
                                                  question_id: int) -> None:
    visitor = Browser(app)
    token = visitor.token()
    with db() as session:
        before = row_counts(session)
    for path, form in (("call", {}), ("outcome", {"outcome": "resolved"}),
                       ("sms", {"body": "Hello"})):
        response = visitor.post(f"/questions/{question_id}/{path}",
                                {"csrf_token": token, **form})
        assert response.status_code == 302 and response.headers["Location"] == "/login"
    response = visitor.get(f"/questions/{question_id}/callback-panel")
    assert response.status_code == 302 and response.headers["Location"] == "/login"
    with db() as session:
        assert row_counts(session) == before
    assert api.requests == []



# -- a long call, a released question, first callbacks, double clicks -------------------------

def resident_rung(lawyer: Consultant, api: TwilioApi, db: Db, twilio: Twilio,
                  question_id: int, status: str) -> CallbackAttempt:
    """Press Call, answer, and have the resident's leg report status (in-progress: they
    picked up; no-answer, busy...); return the attempt as it then is."""
    attempt, form = started_call(lawyer, api, db, question_id)
    sid = attempt.consultant_call_sid
    assert sid is not None
    twiml(twilio.post_url(form["Url"], leg_form(sid, "in-progress", AnsweredBy="human")))
    twilio.post(f"/callbacks/{attempt.id}/status/resident",
                resident_form(new_sid("CA"), sid, status))
    [rung] = [a for a in attempts(db, question_id) if a.id == attempt.id]
    return rung


def connected_call(lawyer: Consultant, api: TwilioApi, db: Db, twilio: Twilio,
                   question_id: int) -> CallbackAttempt:
    """Press Call, answer, and have the resident pick up."""
    connected = resident_rung(lawyer, api, db, twilio, question_id, "in-progress")
    assert connected.state == "connected"
    return connected


@pytest.mark.parametrize("again", [False, True])
def test_an_answering_machine_written_as_no_answer_is_no_answer_given(
        db: Db, api: TwilioApi, twilio: Twilio, lawyer: Consultant, question_id: int,
        again: bool) -> None:
    """The resident's answering machine picked up (Twilio reports the leg answered); the
    lawyer heard its greeting and wrote "no answer". Later their SMS answer is refused by
    Twilio: the question is not resolved on it, as if the machine's call had been a talk."""
    attempt = connected_call(lawyer, api, db, twilio, question_id)
    sid = attempt.consultant_call_sid
    assert sid is not None
    twilio.post(f"/callbacks/{attempt.id}/status/resident",
                resident_form(str(attempt.resident_call_sid), sid, "completed",
                              CallDuration="20"))
    twilio.post(f"/callbacks/{attempt.id}/status/consultant",
                leg_form(sid, "completed", CallDuration="30"))
    if again:  # the lawyer hung up on the machine and called again: nobody answered
        assert lawyer.call(question_id).status_code == 303
        [second] = [a for a in attempts(db, question_id) if a.id != attempt.id]
        twilio.post(f"/callbacks/{second.id}/status/consultant",
                    leg_form(str(second.consultant_call_sid), "completed", CallDuration="40"))
    assert lawyer.outcome(question_id, "no_answer",
                          own_phone=again).status_code == 303
    assert lawyer.claim(question_id).status_code == 303
    api.fail_next(twilio_error(400, 21408, "Permission to send an SMS has not been enabled"))
    lawyer.sms(question_id, "Пенсию назначают в ЦОН.")
    refused = lawyer.outcome(question_id, "resolved")
    assert refused.status_code == 409
    assert "did not reach the resident" in refused.get_data(as_text=True)


def test_a_long_conversation_keeps_the_question(app: Flask, db: Db, api: TwilioApi,
                                                twilio: Twilio, lawyer: Consultant,
                                                question_id: int) -> None:
    from hotline.jobs import sweep
    from tests.support import runtime

    attempt = connected_call(lawyer, api, db, twilio, question_id)
    # 45 minutes of talking: Twilio sends nothing meanwhile, nor does anyone touch the claim.
    long_ago = datetime.now(UTC) - timedelta(minutes=45)
    with db() as session:
        question = session.get(Question, question_id)
        talking = session.get(CallbackAttempt, attempt.id)
        assert question is not None and talking is not None
        question.claim_touched_at = long_ago
        talking.updated_at = long_ago
    sweep(runtime(app))
    assert load_question(db, question_id).status == "claimed"
    add_account(app, "other@example.kz", phone="+77071234567", name="Dana")
    assert Consultant(app, "other@example.kz").claim(question_id).status_code == 409
    # The panel the holder's page polls during the call touches their claim.
    lawyer.panel(question_id)
    touched = load_question(db, question_id).claim_touched_at
    assert touched is not None and touched > datetime.now(UTC) - timedelta(minutes=1)
    # After the call, the outcome is still theirs to record.
    assert lawyer.outcome(question_id, "resolved").status_code == 303
    assert load_question(db, question_id).close_reason == "resolved"


def test_the_panel_touches_only_the_holders_claim_and_only_during_a_call(
        app: Flask, db: Db, api: TwilioApi, lawyer: Consultant, question_id: int) -> None:
    """The panel polled for an SMS status (up to an hour while the resident's phone is off)
    does not keep a question for a consultant who walked away; during a call it does."""
    long_ago = datetime.now(UTC) - timedelta(minutes=20)

    def touched_long_ago() -> None:
        with db() as session:
            question = session.get(Question, question_id)
            assert question is not None
            question.claim_touched_at = long_ago

    touched_long_ago()
    lawyer.panel(question_id)  # no call: the page only polls an SMS status
    assert load_question(db, question_id).claim_touched_at == long_ago
    started_call(lawyer, api, db, question_id)
    touched_long_ago()
    add_account(app, "other@example.kz", phone="+77071234567", name="Dana")
    Consultant(app, "other@example.kz").panel(question_id)
    assert load_question(db, question_id).claim_touched_at == long_ago
    lawyer.panel(question_id)
    touched = load_question(db, question_id).claim_touched_at
    assert touched is not None and touched > long_ago


@pytest.mark.parametrize("give_up", ["release", "close"])
def test_the_resident_is_not_dialled_after_the_question_was_given_up(
        db: Db, api: TwilioApi, twilio: Twilio, lawyer: Consultant, question_id: int,
        give_up: str) -> None:
    attempt, form = started_call(lawyer, api, db, question_id)
    sid = attempt.consultant_call_sid
    assert sid is not None
    # While the consultant's phone rings they give the question back, or close it.
    fields = {"csrf_token": lawyer.token(), "reason": "test_call"}
    assert lawyer.browser.post(f"/questions/{question_id}/{give_up}",
                               fields).status_code == 303
    [ended] = attempts(db, question_id)
    assert ended.state == "ended"
    assert ended.error == "the question was released or closed during the call"
    # Then they answer their phone: told so, and hung up on; the resident is not dialled.
    answer = twiml(twilio.post_url(form["Url"], leg_form(sid, "in-progress",
                                                         AnsweredBy="human")))
    assert [child.tag for child in answer] == ["Say", "Hangup"]
    assert answer.findall("Dial") == []
    [say] = answer.findall("Say")
    assert say.get("language") == "ru-RU"
    assert f"Вопрос номер {question_id} больше не закреплён за вами" in spoken(answer)[0]
    if give_up == "release":
        lawyer.claim(question_id)
        assert section(lawyer.panel(question_id), "call-state") == \
            "Ended: The question was released or closed during the call."


@pytest.mark.parametrize("form", ["close", "release", "outcome", "call"])
def test_ending_a_question_while_a_status_arrives_does_not_deadlock(
        app: Flask, db: Db, api: TwilioApi, lawyer: Consultant, question_id: int,
        form: str, caplog: pytest.LogCaptureFixture) -> None:
    """Twilio's status callbacks lock the attempt, then the question. The test holds the
    attempt as a status callback does while the consultant closes the question (or releases
    it, or writes an outcome, or presses Call again), then touches the question as the
    callback goes on to do: with the forms locking the attempt first, the form waits and both
    finish; the other way round, PostgreSQL finds a deadlock and aborts one of them (the form,
    which then runs again: storage.db.retry_conflicts logs it, and the test fails on that
    log)."""
    attempt, _form = started_call(lawyer, api, db, question_id)
    token = lawyer.token()
    posts = {"close": (f"/questions/{question_id}/close", {"reason": "test_call"}),
             "release": (f"/questions/{question_id}/release", {}),
             "outcome": (f"/questions/{question_id}/outcome", {"outcome": "wrong_number",
                                                               "own_phone": "1"}),
             # Calling again while the call rings is refused, after the same locks.
             "call": (f"/questions/{question_id}/call", {})}
    path, fields = posts[form]
    answers: list[int] = []
    rt = app.extensions["hotline"]
    with rt.sessions() as status_callback, status_callback.begin():
        status_callback.execute(select(CallbackAttempt).where(CallbackAttempt.id == attempt.id)
                                .with_for_update())
        sender = threading.Thread(target=lambda: answers.append(lawyer.browser.post(
            path, {"csrf_token": token, **fields}).status_code))
        sender.start()
        time.sleep(1.0)  # the form is now waiting, for the attempt or (wrongly) further on
        status_callback.execute(update(Question).where(Question.id == question_id)
                                .values(claim_touched_at=datetime.now(UTC)))
    sender.join(timeout=30)
    assert answers == [409 if form == "call" else 303]
    assert "the database aborted a transaction" not in caplog.text
    question = load_question(db, question_id)
    if form == "call":
        assert question.status == "claimed"
        assert [a.state for a in attempts(db, question_id)] == ["dialing"]
        return
    assert question.status == ("waiting" if form == "release" else "closed")
    assert attempts(db, question_id)[0].state == "ended"


def never_the_victim(session: Session) -> None:
    """Let the request, not this transaction, be the one a deadlock aborts: PostgreSQL aborts
    the backend whose wait first outlasts deadlock_timeout (1 s), and under load (pytest-xdist)
    the test's own backend sometimes checked first. The tests connect as a superuser."""
    session.execute(text("SET LOCAL deadlock_timeout = '30s'"))


def _wait_until_blocked(db: Db) -> None:
    """Return once a transaction on this test's database waits for a lock (other tests on
    the same server have databases of their own)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with db() as session:
            if session.scalar(text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'")):
                return
        time.sleep(0.02)
    raise AssertionError("nothing waited for a lock")


@pytest.mark.parametrize("database_url", [pytest.param("postgresql", marks=pytest.mark.postgres)],
                         indirect=True)
@pytest.mark.parametrize(("request_", "tries"), [
    ("outcome", 3), ("status", 3), ("outcome", 1)])
def test_a_request_the_database_aborts_for_a_deadlock_runs_again(
        app: Flask, db: Db, api: TwilioApi, twilio: Twilio, lawyer: Consultant,
        question_id: int, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        request_: str, tries: int) -> None:
    """A writer outside the lock order (here the test: the question's row, then the
    resident's or the call's) deadlocks with the outcome form or a status callback, and
    PostgreSQL aborts the one that waited first: the request. It runs again and succeeds
    (storage.db.retry_conflicts); allowed no second run, the consultant is told that nothing
    was saved and to send the form again, and nothing was."""
    import storage.db

    monkeypatch.setattr(storage.db, "CONFLICT_TRIES", tries)
    attempt, _form = started_call(lawyer, api, db, question_id)
    sid = attempt.consultant_call_sid
    caller_id = load_question(db, question_id).caller_id
    token = lawyer.token()
    answers: list[TestResponse] = []
    if request_ == "outcome":
        def send() -> None:
            answers.append(lawyer.browser.post(f"/questions/{question_id}/outcome", {
                "csrf_token": token, "outcome": "wrong_number", "own_phone": "1"}))
        second_lock = select(Caller.id).where(Caller.id == caller_id).with_for_update()
    else:
        def send() -> None:
            answers.append(twilio.post(f"/callbacks/{attempt.id}/status/consultant",
                                       leg_form(str(sid), "ringing")))
        second_lock = select(CallbackAttempt.id).where(CallbackAttempt.id == attempt.id) \
            .with_for_update()
    rt = app.extensions["hotline"]
    with rt.sessions() as other_writer, other_writer.begin():
        never_the_victim(other_writer)
        other_writer.execute(select(Question.id).where(Question.id == question_id)
                             .with_for_update())
        sender = threading.Thread(target=send)
        sender.start()
        _wait_until_blocked(db)  # the request holds its first lock and waits for the question
        other_writer.execute(second_lock)  # a deadlock: the request is aborted in 1 s
    sender.join(timeout=30)
    [answer] = answers
    # The deadlock happened, and the request was its victim.
    assert "deadlock detected" in caplog.text or "40P01" in caplog.text
    assert ("running it again (2 of 3)" in caplog.text) == (tries == 3)
    with db() as session:
        outcomes = session.scalars(select(AuditEvent).where(
            AuditEvent.question_id == question_id, AuditEvent.action == audit.OUTCOME)).all()
    if tries == 1:
        assert answer.status_code == 503
        body = html.unescape(answer.get_data(as_text=True))
        assert "nothing of yours was saved. Please go back and send it again." in body
        assert f'href="/questions/{question_id}"' in body
        assert outcomes == []
        assert load_question(db, question_id).status == "claimed"
    elif request_ == "outcome":
        assert answer.status_code == 303
        assert len(outcomes) == 1
        assert load_question(db, question_id).close_reason == "wrong_number"
    else:
        assert answer.status_code == 204
        assert attempts(db, question_id)[0].consultant_status == "ringing"


@pytest.mark.parametrize("database_url", [pytest.param("postgresql", marks=pytest.mark.postgres)],
                         indirect=True)
@pytest.mark.parametrize("tries", [3, 1])
def test_twilio_is_asked_once_when_its_answer_meets_a_deadlock(
        app: Flask, db: Db, api: TwilioApi, twilio: Twilio, lawyer: Consultant,
        question_id: int, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        tries: int) -> None:
    """Call: the attempt is stored, Twilio is asked to ring the consultant, then its answer
    is stored. While Twilio answers, another writer takes the question and then the attempt,
    which storing the answer holds: a deadlock, whose victim is storing the answer. Run again
    it stores it; allowed no second run, the consultant is still told their phone rings (it
    does), and Twilio's callback brings the call's id. Either way Twilio was asked once.

    Storing the answer writes only the attempt now (the first callback is counted when the
    resident is dialled, not here), so the test has it also lock the question, as any later
    change to that transaction might: the deadlock is PostgreSQL's own."""
    import storage.db

    monkeypatch.setattr(storage.db, "CONFLICT_TRIES", tries)
    dialled = callbacks.store.dialled

    def dialled_and_question(session: Session, attempt: CallbackAttempt, *args: Any) -> None:
        dialled(session, attempt, *args)
        session.flush()  # the attempt is held...
        session.get(Question, attempt.question_id, with_for_update=True)  # ...then the question

    monkeypatch.setattr(callbacks.store, "dialled", dialled_and_question)
    asked, locked = threading.Event(), threading.Event()

    def hold_on(resource: str) -> None:
        if resource == CALLS:
            asked.set()
            assert locked.wait(10)

    api.before_answer = hold_on
    token = lawyer.token()
    answers: list[TestResponse] = []
    sender = threading.Thread(target=lambda: answers.append(lawyer.browser.post(
        f"/questions/{question_id}/call", {"csrf_token": token})))
    rt = app.extensions["hotline"]
    with rt.sessions() as other_writer, other_writer.begin():
        never_the_victim(other_writer)
        sender.start()
        assert asked.wait(10)
        other_writer.execute(select(Question.id).where(Question.id == question_id)
                             .with_for_update())
        locked.set()
        _wait_until_blocked(db)  # storing the answer holds the attempt, waits for the question
        [attempt] = attempts(db, question_id)
        other_writer.execute(select(CallbackAttempt.id).where(CallbackAttempt.id == attempt.id)
                             .with_for_update())
    sender.join(timeout=30)
    [answer] = answers
    assert "40P01" in caplog.text
    assert answer.status_code == 303
    assert answer.headers["Location"] == f"/questions/{question_id}#callback-panel"
    assert "The hotline is calling your phone now." in lawyer.notices()
    [asked_twilio] = api.calls()
    [stored] = attempts(db, question_id)
    assert stored.state == "dialing"
    if tries == 3:
        assert stored.consultant_call_sid is not None
        return
    assert "Twilio's answer could not be stored (40P01)" in caplog.text
    assert stored.consultant_call_sid is None
    # The consultant answers: Twilio's request names the call, and the resident is dialled.
    sid = new_sid("CA")
    reply = twiml(twilio.post_url(asked_twilio.form["Url"], leg_form(sid, "in-progress",
                                                                     AnsweredBy="human")))
    assert reply.findall("Dial")
    assert attempts(db, question_id)[0].consultant_call_sid == sid


def test_the_answer_hangs_up_when_the_question_went_to_someone_else(
        app: Flask, db: Db, api: TwilioApi, twilio: Twilio, lawyer: Consultant,
        question_id: int) -> None:
    attempt, form = started_call(lawyer, api, db, question_id)
    sid = attempt.consultant_call_sid
    assert sid is not None
    add_account(app, "other@example.kz", phone="+77071234567", name="Dana")
    with db() as session:
        question = session.get(Question, question_id)
        other = session.scalars(select(User).where(User.email == "other@example.kz")).one()
        assert question is not None
        question.claimed_by_id = other.id  # however it happened
    answer = twiml(twilio.post_url(form["Url"], leg_form(sid, "in-progress")))
    assert [child.tag for child in answer] == ["Say", "Hangup"]
    [ended] = attempts(db, question_id)
    assert ended.state == "ended"
    assert ended.error == "the question was released or closed during the call"


def test_an_outcome_counts_as_the_first_callback(db: Db, api: TwilioApi,
                                                 lawyer: Consultant) -> None:
    # A call made by other means (the consultant's own phone): the outcome is the first one.
    before = datetime.now(UTC)
    question_id = make_question(db)
    lawyer.claim(question_id)
    assert load_question(db, question_id).first_callback_at is None
    assert lawyer.outcome(question_id, "follow_up", "ЦОН").status_code == 303
    first = load_question(db, question_id).first_callback_at
    assert first is not None and first >= before
    # A later outcome keeps the first callback's time.
    lawyer.claim(question_id)
    assert lawyer.outcome(question_id, "resolved").status_code == 303
    assert load_question(db, question_id).first_callback_at == first
    assert api.requests == []


def test_a_double_clicked_sms_answer_is_sent_once(db: Db, api: TwilioApi, lawyer: Consultant,
                                                  question_id: int) -> None:
    html = lawyer.panel(question_id)
    # The button is disabled once the form is sent (static/workspace.js; in the browser:
    # test_workspace.py::test_the_call_and_sms_buttons_work_once_under_the_content_security_policy).
    form = re.search(r'<form id="sms-form"[^>]*>', html)
    assert form and "data-once" in form.group(0)
    body = "Обратитесь в ЦОН с удостоверением."
    first, second = lawyer.sms(question_id, body), lawyer.sms(question_id, body)
    assert first.status_code == second.status_code == 303
    assert second.headers["Location"] == f"/questions/{question_id}#sms-answer"
    assert "This SMS was sent a moment ago already; it was not sent again." in lawyer.notices()
    with db() as session:
        [message] = session.scalars(select(SmsMessage)).all()
    assert len(api.sent()) == 1 and len(events(db, audit.SMS_SENT)) == 1
    # Another text is sent; so is the same text a minute later.
    assert lawyer.sms(question_id, body + " Удачи!").status_code == 303
    with db() as session:
        sent = session.get(SmsMessage, message.id)
        assert sent is not None
        sent.created_at -= timedelta(seconds=61)
    assert lawyer.sms(question_id, body).status_code == 303
    assert len(api.sent()) == 3


# -- the retry time (a pure function) ---------------------------------------------------------

HOURS = (9, 20)
TWO_HOURS, DAY = timedelta(hours=2), timedelta(days=1)


def almaty(day: int, hour: int, minute: int = 0, month: int = 3, year: int = 2026) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=ALMATY)


@pytest.mark.parametrize(("failed", "delay", "expected"), [
    (almaty(2, 10), TWO_HOURS, almaty(2, 12)),  # inside the window
    (almaty(2, 17, 59), TWO_HOURS, almaty(2, 19, 59)),  # the last minute of the window
    (almaty(2, 18), TWO_HOURS, almaty(3, 9)),  # 20:00 is outside: next morning
    (almaty(2, 18, 30), TWO_HOURS, almaty(3, 9)),
    (almaty(2, 5), TWO_HOURS, almaty(2, 9)),  # before the window: its start
    (almaty(2, 7), TWO_HOURS, almaty(2, 9)),  # the window's first minute
    (almaty(2, 6, 59), TWO_HOURS, almaty(2, 9)),
    (almaty(2, 23, 30), TWO_HOURS, almaty(3, 9)),  # over midnight: that morning
    # The next day is the whole of its window: a failure just before closing is not due
    # five minutes before the calls stop the next day.
    (almaty(2, 19, 55), DAY, almaty(3, 9)),
    (almaty(2, 10), DAY, almaty(3, 9)),
    # A day later is outside the window: that day's morning, still "the next day" (not the
    # morning after, a day lost for an outcome saved after the window closed).
    (almaty(2, 20, 30), DAY, almaty(3, 9)),
    (almaty(2, 23, 30), DAY, almaty(3, 9)),
    (almaty(2, 20, 30), 2 * DAY, almaty(4, 9)),
    (almaty(2, 8), DAY, almaty(3, 9)),
    (almaty(31, 21, month=12), TWO_HOURS, almaty(1, 9, month=1, year=2027)),  # new year
    (almaty(28, 19, month=2), TWO_HOURS, almaty(1, 9, month=3)),  # end of February
])
def test_the_next_callback_falls_in_the_daytime_window(failed: datetime, delay: timedelta,
                                                       expected: datetime) -> None:
    result = next_callback_time(failed, delay, HOURS, ALMATY)
    assert result == expected
    assert result.tzinfo == UTC


def test_the_window_is_in_almaty_time_whatever_the_input_zone() -> None:
    # 20:00 UTC on 2 March is 01:00 on 3 March in Almaty.
    failed = datetime(2026, 3, 2, 20, 0, tzinfo=UTC)
    assert next_callback_time(failed, TWO_HOURS, HOURS, ALMATY) == almaty(3, 9)
    # 03:00 UTC is 08:00 in Almaty: 2 hours later is inside the window.
    assert next_callback_time(datetime(2026, 3, 2, 3, 0, tzinfo=UTC), TWO_HOURS, HOURS,
                              ALMATY) == almaty(2, 10)


def test_a_whole_day_window_and_bad_windows() -> None:
    assert next_callback_time(almaty(2, 23), TWO_HOURS, (0, 24), ALMATY) == almaty(3, 1)
    assert next_callback_time(almaty(2, 21), TWO_HOURS, (8, 24), ALMATY) == almaty(2, 23)
    for bad in ((20, 9), (9, 9), (-1, 5), (9, 25)):
        with pytest.raises(ValueError):
            next_callback_time(almaty(2, 10), TWO_HOURS, bad, ALMATY)
    with pytest.raises(ValueError):
        next_callback_time(datetime(2026, 3, 2, 10), TWO_HOURS, HOURS, ALMATY)  # naive


def test_the_delay_after_each_failure() -> None:
    delays = (TWO_HOURS, DAY)
    assert [retry_delay(n, delays) for n in (1, 2, 3, 4)] == [TWO_HOURS, DAY, DAY, DAY]
    assert retry_delay(5, (TWO_HOURS,)) == TWO_HOURS


def test_callback_settings_come_from_the_environment() -> None:
    default = Settings.from_env({})
    assert (default.callback_hours, default.callback_retry_minutes,
            default.callback_attempts) == ((9, 20), (120, 1440), 3)
    custom = Settings.from_env({"HOTLINE_CALLBACK_HOURS": " 10 - 18 ",
                                "HOTLINE_CALLBACK_RETRY_MINUTES": "60, 180,1440",
                                "HOTLINE_CALLBACK_ATTEMPTS": "4"})
    assert (custom.callback_hours, custom.callback_retry_minutes,
            custom.callback_attempts) == ((10, 18), (60, 180, 1440), 4)
    for name, value in (("HOTLINE_CALLBACK_HOURS", "9 to 20"),
                        ("HOTLINE_CALLBACK_RETRY_MINUTES", "2h")):
        with pytest.raises(ConfigError, match=name):
            Settings.from_env({name: value})
    token = {"TWILIO_AUTH_TOKEN": "x"}
    for name, value in (("HOTLINE_CALLBACK_HOURS", "20-9"),
                        ("HOTLINE_CALLBACK_RETRY_MINUTES", "0"),
                        ("HOTLINE_CALLBACK_ATTEMPTS", "0")):
        with pytest.raises(ConfigError, match=name):
            Settings.from_env({**token, name: value}).check()


def test_twiml_is_valid_xml_for_a_kazakh_resident_too(db: Db, api: TwilioApi, twilio: Twilio,
                                                      lawyer: Consultant) -> None:
    question_id = make_question(db, language="kk")
    lawyer.claim(question_id)
    attempt, form = started_call(lawyer, api, db, question_id)
    sid = attempt.consultant_call_sid
    assert sid is not None
    root = twiml(twilio.post_url(form["Url"], leg_form(sid, "in-progress")))
    assert ET.tostring(root).count(b"<Number") == 1


def test_the_question_page_carries_the_panel_in_every_language(
        db: Db, api: TwilioApi, lawyer: Consultant, question_id: int) -> None:
    started_call(lawyer, api, db, question_id)
    for language, button, state in (("en", "Call the resident", "Calling your phone…"),
                                    ("ru", "Позвонить жителю", "Звоним на ваш телефон…"),
                                    ("kk", "Тұрғынға қоңырау шалу",
                                     "Телефоныңызға қоңырау шалып жатырмыз…")):
        response = lawyer.browser.get(f"/questions/{question_id}?lang={language}")
        assert response.status_code == 200
        html = response.get_data(as_text=True)
        for form in ("call-form", "outcome-form", "sms-form"):
            assert f'id="{form}"' in html
        assert button in page(response).buttons
        assert section(html, "call-state") == state
        assert polls(html, "callback-status")
        assert html.count('name="outcome"') == 4 and 'name="referral"' in html


@pytest.mark.parametrize("language", ["kk", "ru"])
def test_the_final_sms_text_fits_in_two_parts(language: str) -> None:
    text = load_content().text(language, "sms.callback_failed")
    filled = text.replace("{attempts}", "10").replace("{number}", "+77000000000")
    assert "{" not in filled and segments(filled).parts <= 2


def test_the_final_sms_text_must_carry_its_placeholders(tmp_path: Path) -> None:
    folder = tmp_path / "content"
    shutil.copytree(DEFAULT_CONTENT_DIR, folder)
    ru = folder / "ru.yaml"
    ru.write_text(ru.read_text(encoding="utf-8").replace("{number}", "1414"), encoding="utf-8")
    with pytest.raises(ContentError) as error:
        load_content(folder)
    assert error.value.problems == ["ru.yaml: prompts.sms.callback_failed: must contain {number}",
                                    "ru.yaml: prompts.sms.question_recorded: must contain {number}"]


def test_a_talk_without_an_outcome_is_shown_in_the_queue(app: Flask, db: Db, lawyer: Consultant,
                                                         question_id: int) -> None:
    """A consultant talked with the resident and released the question without writing what
    came of it: the next consultant sees so before calling the resident again."""
    lawyer.claim(question_id)
    talked_at = datetime.now(UTC).replace(microsecond=0)
    with db() as session:
        consultant_id = session.scalars(select(User.id)).one()
        session.add(CallbackAttempt(question_id=question_id, consultant_id=consultant_id,
                                    state="ended", duration=95, created_at=talked_at,
                                    updated_at=talked_at, ended_at=talked_at))
    add_account(app, "other@example.kz", name="Dana")
    other = Consultant(app, "other@example.kz")
    said = (f"Aigerim Nurlanovna talked with them at "
            f"{talked_at.astimezone(ALMATY):%H:%M}; no outcome written")
    # While she still holds it (writing the outcome now), nobody is told.
    assert said not in other.browser.get("/queue?status=claimed").get_data(as_text=True)
    lawyer.browser.post(f"/questions/{question_id}/release", {"csrf_token": lawyer.token()})
    queue = other.browser.get("/queue")
    assert queue.status_code == 200
    assert said in queue.get_data(as_text=True)
    russian = other.browser.get("/queue?lang=ru").get_data(as_text=True)
    assert "говорил(а) с жителем в" in russian
    # Once an outcome is written (by whoever calls next), the note goes.
    assert other.claim(question_id).status_code == 303
    assert other.outcome(question_id, "follow_up", "ЦОН").status_code == 303
    assert said not in other.browser.get("/queue").get_data(as_text=True)


def test_a_message_names_ten_questions_at_most(app: Flask) -> None:
    """A flashed message waits in the session cookie (4 KB) until the next page: a resident
    with a hundred questions must not make the outcome's message too long for it."""
    with app.test_request_context(headers={"Accept-Language": "ru"}):
        assert callbacks.id_list([3, 5, 8]) == "3, 5, 8"
        assert callbacks.id_list(list(range(1, 11))) == "1, 2, 3, 4, 5, 6, 7, 8, 9, 10"
        assert callbacks.id_list(list(range(100, 200))) == (
            "100, 101, 102, 103, 104, 105, 106, 107, 108, 109 и ещё 90")


def test_what_was_written_survives_a_lapsed_claim_and_an_expired_form(
        db: Db, api: TwilioApi, lawyer: Consultant, question_id: int) -> None:
    """An SMS or a referral written for half an hour is refused when the claim lapsed
    meanwhile (409) or the form's token expired with the session (400, CSRF): the page
    shows what was written, to copy; nothing is sent or saved."""
    referral = "Обратитесь в ЦОН Жамбылского района, каб. 12"
    with db() as session:
        question = session.get(Question, question_id)
        assert question is not None
        question.status, question.claimed_by_id = "waiting", None  # the claim lapsed
    for refused in (lawyer.sms(question_id, "Ваша пенсия будет пересчитана"),
                    lawyer.outcome(question_id, "follow_up", referral)):
        assert refused.status_code == 409
        assert draft(refused, "sms-draft") in ("Ваша пенсия будет пересчитана", referral)
    expired = lawyer.browser.post(f"/questions/{question_id}/sms",
                                  {"csrf_token": "expired", "body": "Позвоните в 1414"})
    assert expired.status_code == 400
    assert draft(expired, "sms-draft") == "Позвоните в 1414"
    assert api.requests == []
    assert load_question(db, question_id).referral is None
