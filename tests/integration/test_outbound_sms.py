"""Outbound SMS through the twilio REST client against a local stand-in for Twilio's API, and
the delivery status callbacks Twilio posts back (signed like every webhook)."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from flows.segments import segments
from hotline import outbound_sms as outbound
from hotline.config import Settings
from hotline.outbound_sms import (
    MAX_SEND_AGE,
    RECONCILE_AFTER,
    RECONCILE_LEASE,
    WAITING_FOR_MORNING,
    SmsRetry,
    make_twilio_client,
    messages_to_send,
    reconcile_statuses,
    send_sms,
)
from hotline.runtime import Runtime
from storage import sms
from storage.calls import touch_caller
from storage.models import Caller, SmsMessage
from storage.retention import pseudonym
from tests.support import ACCOUNT_SID, AUTH_TOKEN, BASE_URL, CALLER, Twilio, row_counts, runtime
from tests.twilio_api import MESSAGE_RECORDS, TwilioApi

HOTLINE_NUMBER = "+77000000000"
STATUS_URL = f"{BASE_URL}/sms/status"
UNSUBSCRIBED = (400, {"code": 21610, "message": "Attempt to send to unsubscribed recipient",
                      "more_info": "https://www.twilio.com/docs/errors/21610", "status": 400})
INVALID_TO = (400, {"code": 21211, "message": "The 'To' number +77011234567 is not a valid "
                    "phone number.", "more_info": "https://www.twilio.com/docs/errors/21211",
                    "status": 400})
SERVER_ERROR = (500, {"code": 20500, "message": "Internal Server Error",
                      "more_info": "https://www.twilio.com/docs/errors/20500", "status": 500})

Db = Callable[[], AbstractContextManager[Session]]


@pytest.fixture
def settings(settings: Settings, api: TwilioApi) -> Settings:
    """The test settings with the REST API on the stand-in and a public URL for callbacks."""
    return settings.override(twilio_api_url=api.url, public_base_url=BASE_URL)


@pytest.fixture
def rt(app: Flask) -> Runtime:
    return runtime(app)


def queue(db: Db, body: str, phone: str = CALLER, *, with_caller: bool = True) -> int:
    """Store an outbound message the way the SMS dialogue does; return its id."""
    now = datetime.now(UTC)
    with db() as session:
        caller = touch_caller(session, phone, now) if with_caller else None
        parts = segments(body)
        message = sms.queue_outbound(session, phone=phone, body=body, language="ru",
                                     caller=caller, question_id=None, encoding=parts.encoding,
                                     segments=parts.parts, now=now)
        return message.id


def load(db: Db, message_id: int) -> SmsMessage:
    with db() as session:
        message = session.get(SmsMessage, message_id)
        assert message is not None
        return message


def stale(rt: Runtime, db: Db, message_id: int) -> None:
    """Age the message's last change past HOTLINE_STALE_SECONDS (its sender is gone)."""
    with db() as session:
        message = session.get(SmsMessage, message_id)
        assert message is not None
        message.updated_at = datetime.now(UTC) - timedelta(seconds=rt.settings.stale_seconds + 5)


def caller_row(db: Db, phone: str = CALLER) -> Caller | None:
    with db() as session:
        return session.scalars(select(Caller).where(Caller.phone == phone)).one_or_none()


def status_form(message_sid: str, status: str, **extra: str) -> dict[str, str]:
    """A status callback's form fields, as Twilio posts them."""
    return {"MessageSid": message_sid, "SmsSid": message_sid, "AccountSid": ACCOUNT_SID,
            "MessageStatus": status, "SmsStatus": status, "From": HOTLINE_NUMBER, "To": CALLER,
            "ApiVersion": "2010-04-01", **extra}


def test_the_client_talks_to_the_configured_api(settings: Settings, api: TwilioApi) -> None:
    client = make_twilio_client(settings)
    assert client.api.base_url == api.url
    sent = client.messages.create(to=CALLER, from_=HOTLINE_NUMBER, body="ping")
    assert re.fullmatch(r"SM[0-9a-f]{32}", sent.sid) and sent.status == "queued"
    assert sent.account_sid == ACCOUNT_SID and sent.num_segments == "1"
    [request] = api.requests
    assert request.authorised and request.path.endswith(f"/Accounts/{ACCOUNT_SID}/Messages.json")
    client.http_client.session.close()


def test_a_queued_message_is_sent_once(rt: Runtime, db: Db, api: TwilioApi) -> None:
    message_id = queue(db, "Pension: apply at a PSC (CON) with your ID card.")
    assert send_sms(rt, message_id) == "queued"
    assert send_sms(rt, message_id) == "queued"  # the job ran twice: nothing more is sent
    [request] = api.requests
    assert request.authorised
    assert request.form == {"To": CALLER, "From": HOTLINE_NUMBER,
                            "Body": "Pension: apply at a PSC (CON) with your ID card.",
                            "StatusCallback": STATUS_URL}
    message = load(db, message_id)
    assert message.message_sid is not None and re.fullmatch(r"SM[0-9a-f]{32}",
                                                              message.message_sid)
    assert message.status == "queued"
    assert (message.error_code, message.error_message) == (None, None)


def test_cyrillic_and_emoji_arrive_intact(rt: Runtime, db: Db, api: TwilioApi) -> None:
    body = ("Зейнетақы: ХҚКО-ға жеке куәлікпен барыңыз. Пенсия: обратитесь в ЦОН "
            "с удостоверением личности. «Ответ» — 0 юрист ✅😀")
    message_id = queue(db, body)
    send_sms(rt, message_id)
    [form] = api.sent()
    assert form["Body"] == body
    assert load(db, message_id).message_sid is not None


def test_no_status_callback_without_a_public_url(rt: Runtime, db: Db, api: TwilioApi) -> None:
    without = replace(rt, settings=rt.settings.override(public_base_url=None))
    message_id = queue(db, "Hello")
    assert send_sms(without, message_id) == "queued"
    [form] = api.sent()
    assert "StatusCallback" not in form


def test_unsubscribed_recipient_is_opted_out_and_never_sent_to_again(
    rt: Runtime, db: Db, api: TwilioApi
) -> None:
    api.fail_next(UNSUBSCRIBED)
    first = queue(db, "Ответ на ваш вопрос")
    assert send_sms(rt, first) == "failed"
    message = load(db, first)
    assert (message.status, message.error_code, message.message_sid) == ("failed", 21610, None)
    assert "unsubscribed recipient" in (message.error_message or "")
    caller = caller_row(db)
    assert caller is not None and caller.sms_opted_out and caller.sms_opted_out_at is not None

    later = queue(db, "Ещё один ответ")
    assert send_sms(rt, later) == "failed"
    assert len(api.requests) == 1  # no request at all for the later message
    message = load(db, later)
    assert message.status == "failed" and message.message_sid is None
    assert "opted out" in (message.error_message or "")
    assert send_sms(rt, later) == "failed" and len(api.requests) == 1


def test_a_stop_kept_under_a_pseudonym_still_holds(rt: Runtime, db: Db, api: TwilioApi) -> None:
    """STOP, then retention replaced the number; the resident came back with a new record."""
    now = datetime.now(UTC)
    with db() as session:
        earlier = touch_caller(session, CALLER, now)
        sms.set_opted_out(session, earlier, True, now, key=rt.pseudonym_key)
        earlier.phone = pseudonym(CALLER, rt.pseudonym_key)
    # No record has the number: it is looked up by its pseudonym.
    unlinked = queue(db, "Hello", with_caller=False)
    assert send_sms(rt, unlinked) == "failed"
    message_id = queue(db, "Hello")  # a new caller row with the number
    assert send_sms(rt, message_id) == "failed"
    assert "opted out" in (load(db, message_id).error_message or "")
    assert api.requests == []
    # A pseudonym made with another key is somebody else's: the message goes.
    with db() as session:
        other = session.scalars(select(Caller).where(Caller.phone == CALLER)).one()
        session.scalars(select(Caller).where(Caller.id != other.id)).one().phone = pseudonym(
            CALLER, b"another key")
    assert send_sms(rt, queue(db, "Hello again")) == "queued"  # Twilio's answer: accepted
    assert len(api.requests) == 1


def test_an_opted_out_number_without_a_caller_link_is_found_by_phone(
    rt: Runtime, db: Db, api: TwilioApi
) -> None:
    with db() as session:
        caller = touch_caller(session, CALLER, datetime.now(UTC))
        sms.set_opted_out(session, caller, True, datetime.now(UTC), key=b"k")
    message_id = queue(db, "Hello", with_caller=False)
    assert send_sms(rt, message_id) == "failed"
    assert api.requests == []


def test_unsubscribed_number_unknown_as_a_caller_becomes_one_opted_out(
    rt: Runtime, db: Db, api: TwilioApi
) -> None:
    api.fail_next(UNSUBSCRIBED)
    message_id = queue(db, "Hello", phone="+77017654321", with_caller=False)
    assert send_sms(rt, message_id) == "failed"
    caller = caller_row(db, "+77017654321")
    assert caller is not None and caller.sms_opted_out
    assert load(db, message_id).caller_id == caller.id


def test_another_client_error_fails_the_message_for_good(
    rt: Runtime, db: Db, api: TwilioApi
) -> None:
    api.fail_next(INVALID_TO)
    message_id = queue(db, "Hello")
    assert send_sms(rt, message_id) == "failed"
    message = load(db, message_id)
    assert (message.status, message.error_code) == ("failed", 21211)
    assert "not a valid phone number" in (message.error_message or "")
    caller = caller_row(db)
    assert caller is not None and not caller.sms_opted_out
    assert send_sms(rt, message_id) == "failed" and len(api.requests) == 1
    assert messages_to_send(rt) == []


def test_a_server_error_is_retried_and_then_sent(rt: Runtime, db: Db, api: TwilioApi,
                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # an operator's configuration that lets everything through
    api.fail_next(SERVER_ERROR)
    message_id = queue(db, "Ответ юриста")
    with pytest.raises(SmsRetry):
        send_sms(rt, message_id)
    message = load(db, message_id)
    assert (message.status, message.message_sid) == ("queued", None)
    assert "HTTP 500" in (message.error_message or "")

    assert send_sms(rt, message_id) == "queued"
    # The retry asks Twilio first whether the failed try created it (it did not), then sends.
    assert [(r.method, r.status) for r in api.requests] == [
        ("POST", 500), ("GET", 200), ("POST", 201)]
    # The retry's question (messages sent To the resident) is in twilio's own log at INFO:
    # with the number cut to its last four digits (hotline.logs.MaskNumbers).
    logged = [r.getMessage() for r in caplog.records if r.name == "twilio.http_client"]
    assert any("Messages.json" in line for line in logged)
    assert not any(CALLER[1:] in line for line in logged), logged
    assert api.requests[0].form == api.requests[2].form
    message = load(db, message_id)
    assert message.message_sid is not None
    assert (message.error_code, message.error_message) == (None, None)


def test_rate_limiting_is_retried(rt: Runtime, db: Db, api: TwilioApi) -> None:
    api.fail_next((429, {"code": 20429, "message": "Too Many Requests", "status": 429}))
    message_id = queue(db, "Hello")
    with pytest.raises(SmsRetry):
        send_sms(rt, message_id)
    assert load(db, message_id).status == "queued"


def test_an_unreachable_api_is_retried(rt: Runtime, db: Db, api: TwilioApi) -> None:
    with TwilioApi(ACCOUNT_SID, AUTH_TOKEN) as gone:
        dead_url = gone.url  # a port that nobody listens on once this server is closed
    down = replace(rt, settings=rt.settings.override(twilio_api_url=dead_url))
    message_id = queue(db, "Hello")
    with pytest.raises(SmsRetry):
        send_sms(down, message_id)
    message = load(db, message_id)
    assert (message.status, message.message_sid) == ("queued", None)
    assert "ConnectionError" in (message.error_message or "")
    assert send_sms(rt, message_id) == "queued" and len(api.sent()) == 1


def test_a_message_another_worker_is_sending_is_left_alone_until_stale(
    rt: Runtime, db: Db, api: TwilioApi
) -> None:
    message_id = queue(db, "Hello")
    with db() as session:
        message = session.get(SmsMessage, message_id)
        assert message is not None
        message.status = "sending"  # claimed by a job that is talking to Twilio right now
        message.updated_at = datetime.now(UTC)
    assert send_sms(rt, message_id) == "sending"
    assert api.requests == []
    assert messages_to_send(rt) == []

    stale(rt, db, message_id)  # that worker died: its claim is older than the stale limit
    assert messages_to_send(rt) == [message_id]
    assert send_sms(rt, message_id) == "queued"
    assert len(api.sent()) == 1


def test_a_message_twilio_took_before_the_worker_died_is_not_sent_again(
    rt: Runtime, db: Db, api: TwilioApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker dies after Twilio accepted the message and before its answer is stored: the
    row stays "sending" with no MessageSid, and the sweep sends it again once stale. The
    retry asks Twilio first, finds it, and stores its SID: the resident gets one SMS."""
    import hotline.outbound_sms as outbound

    message_id = queue(db, "Сұрағыңыз кезекте. Заңгер 3 жұмыс күні ішінде хабарласады.")

    def died(*args: object, **kwargs: object) -> str:
        raise SystemExit("the worker was killed")

    with monkeypatch.context() as patch:
        patch.setattr(outbound, "_finish", died)
        with pytest.raises(SystemExit):
            send_sms(rt, message_id)
    [accepted] = api.messages
    message = load(db, message_id)
    assert (message.status, message.message_sid) == ("sending", None)
    stale(rt, db, message_id)
    assert messages_to_send(rt) == [message_id]
    assert send_sms(rt, message_id) == "queued"
    assert len(api.sent()) == 1
    message = load(db, message_id)
    assert message.message_sid == accepted["sid"]
    # The same text queued again a moment later (a new row) is a new message, even on its
    # retry after an error: the first one's SID is stored on the first row.
    again = queue(db, "Сұрағыңыз кезекте. Заңгер 3 жұмыс күні ішінде хабарласады.")
    api.fail_next(SERVER_ERROR)
    with pytest.raises(SmsRetry):
        send_sms(rt, again)
    assert send_sms(rt, again) == "queued" and len(api.sent()) == 2
    assert load(db, again).message_sid not in (None, accepted["sid"])


def test_only_queued_outbound_messages_are_sent(rt: Runtime, db: Db, api: TwilioApi) -> None:
    now = datetime.now(UTC)
    with db() as session:
        caller = touch_caller(session, CALLER, now)
        inbound, _ = sms.record_inbound(session, message_sid="SM" + uuid.uuid4().hex,
                                        phone=CALLER, body="МЕНЮ", caller=caller, now=now)
        reply = sms.record_reply(session, to=inbound, body="Меню: 1 пенсия", encoding="UCS-2",
                                 segments=1, now=now)
        ids = inbound.id, reply.id
    assert [send_sms(rt, i) for i in ids] == ["received", "replied"]
    assert send_sms(rt, 999_999) == "missing"
    assert api.requests == []


def test_the_sweep_gives_up_on_a_message_older_than_a_day(rt: Runtime, db: Db) -> None:
    message_id = queue(db, "Hello")
    long_ago = datetime.now(UTC) - MAX_SEND_AGE - timedelta(minutes=1)
    with db() as session:
        message = session.get(SmsMessage, message_id)
        assert message is not None
        message.created_at = message.updated_at = long_ago
    assert messages_to_send(rt) == []
    message = load(db, message_id)
    assert message.status == "failed" and "given up" in (message.error_message or "")


# Status callbacks ---------------------------------------------------------------------------


def sent_message(rt: Runtime, db: Db) -> tuple[int, str]:
    message_id = queue(db, "Ответ юриста")
    send_sms(rt, message_id)
    sid = load(db, message_id).message_sid
    assert sid is not None
    return message_id, sid


def test_sent_then_delivered_is_recorded(rt: Runtime, db: Db, twilio: Twilio) -> None:
    message_id, sid = sent_message(rt, db)
    assert twilio.post("/sms/status", status_form(sid, "sent")).status_code == 204
    assert load(db, message_id).status == "sent"
    assert twilio.post("/sms/status", status_form(sid, "delivered")).status_code == 204
    message = load(db, message_id)
    assert (message.status, message.error_code) == ("delivered", None)


def test_callbacks_out_of_order_keep_the_final_status(
    rt: Runtime, db: Db, twilio: Twilio
) -> None:
    message_id, sid = sent_message(rt, db)
    for status in ("delivered", "sent", "sending", "queued", "delivered"):
        assert twilio.post("/sms/status", status_form(sid, status)).status_code == 204
        assert load(db, message_id).status == "delivered"
    # A final status is not replaced by another final one either.
    twilio.post("/sms/status", status_form(sid, "undelivered", ErrorCode="30003"))
    assert load(db, message_id).status == "delivered"


def test_undelivered_keeps_twilio_error_code(rt: Runtime, db: Db, twilio: Twilio) -> None:
    message_id, sid = sent_message(rt, db)
    twilio.post("/sms/status", status_form(sid, "undelivered", ErrorCode="30003"))
    twilio.post("/sms/status", status_form(sid, "sent"))  # late, changes nothing
    message = load(db, message_id)
    assert (message.status, message.error_code) == ("undelivered", 30003)
    caller = caller_row(db)
    assert caller is not None and not caller.sms_opted_out


def test_error_21610_in_a_callback_opts_the_caller_out(
    rt: Runtime, db: Db, twilio: Twilio, api: TwilioApi
) -> None:
    message_id, sid = sent_message(rt, db)
    response = twilio.post("/sms/status", status_form(sid, "failed", ErrorCode="21610"))
    assert response.status_code == 204
    message = load(db, message_id)
    assert (message.status, message.error_code) == ("failed", 21610)
    caller = caller_row(db)
    assert caller is not None and caller.sms_opted_out
    later = queue(db, "Ещё ответ")
    assert send_sms(rt, later) == "failed"
    assert len(api.requests) == 1


@pytest.mark.parametrize("signature", ["", "bm90IGEgc2lnbmF0dXJl"])
def test_an_unsigned_status_callback_is_refused_and_changes_nothing(
    rt: Runtime, db: Db, twilio: Twilio, signature: str
) -> None:
    message_id, sid = sent_message(rt, db)
    response = twilio.post("/sms/status", status_form(sid, "failed", ErrorCode="21610"),
                           signature=signature)
    assert response.status_code == 403
    message = load(db, message_id)
    assert (message.status, message.error_code) == ("queued", None)
    caller = caller_row(db)
    assert caller is not None and not caller.sms_opted_out


def test_a_status_for_an_unknown_message_is_accepted_and_ignored(
    db: Db, twilio: Twilio
) -> None:
    with db() as session:
        before = row_counts(session)
    unknown = "SM" + uuid.uuid4().hex
    assert twilio.post("/sms/status", status_form(unknown, "delivered")).status_code == 204
    with db() as session:
        assert row_counts(session) == before


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # form checks only
@pytest.mark.parametrize("form", [
    {"MessageStatus": "delivered"},
    {"MessageSid": "SM123", "MessageStatus": "delivered"},
    {"MessageSid": "CA" + "0" * 32, "MessageStatus": "delivered"},
    {"MessageSid": "SM" + "0" * 32},
    {"MessageSid": "SM" + "0" * 32, "MessageStatus": "<script>"},
    {"MessageSid": "SM" + "0" * 32, "MessageStatus": "failed", "ErrorCode": "abc"},
])
def test_a_malformed_status_callback_gets_400(
    rt: Runtime, db: Db, twilio: Twilio, form: dict[str, str]
) -> None:
    message_id, sid = sent_message(rt, db)
    form = {k: v.replace("0" * 32, sid[2:]) for k, v in form.items()}
    assert twilio.post("/sms/status", form).status_code == 400
    assert load(db, message_id).status == "queued"


def hours_without_now() -> tuple[int, int]:
    """Calling hours (Almaty) that leave out the present hour: "it is night" whenever the
    test runs."""
    hour = datetime.now(timezone(timedelta(hours=5))).hour
    return (hour + 1, hour + 2) if hour + 2 <= 24 else (0, 1)


def test_a_send_retried_late_outside_the_calling_hours_waits_for_the_morning(
        rt: Runtime, db: Db, api: TwilioApi) -> None:
    """A lawyer's answer written in the evening whose sending failed (Twilio down) and is
    tried again after the calling hours: not sent at night to an elderly resident; kept
    queued, and the sweep sends it once the calling hours come. Written and sent at once it
    goes at any hour (evening volunteers answer SMS questions after the calling hours)."""
    rt.settings = rt.settings.override(callback_hours=hours_without_now())
    fresh = queue(db, "Ответ юриста сразу")
    assert send_sms(rt, fresh) == "queued" and len(api.sent()) == 1  # Twilio's "queued"
    late = queue(db, "Ответ юриста: пенсию назначают в ЦОН.")
    with db() as session:
        message = session.get(SmsMessage, late)
        assert message is not None
        message.created_at = datetime.now(UTC) - timedelta(hours=3)
    assert send_sms(rt, late) == "queued"
    assert len(api.sent()) == 1
    held = load(db, late)
    assert (held.message_sid, held.error_message) == (None, WAITING_FOR_MORNING)
    stale(rt, db, late)
    assert late in messages_to_send(rt)  # the sweep keeps trying
    rt.settings = rt.settings.override(callback_hours=(0, 24))  # morning
    send_sms(rt, late)
    assert [m["Body"] for m in api.sent()][-1] == "Ответ юриста: пенсию назначают в ЦОН."
    assert load(db, late).message_sid is not None


def test_a_status_twilio_reported_before_the_sid_was_stored_is_asked_for_later(
        rt: Runtime, db: Db, api: TwilioApi, twilio: Twilio,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Twilio accepted the message and reported it undelivered before the job stored its
    SID: the callback found no row and was dropped (Twilio does not send it again). The sweep
    asks Twilio about messages with no final news (reconcile_statuses): the failure is
    applied as the callback would have been, and then asked about no more. A message still
    "sent" is asked about again only after a longer wait (doubling)."""
    mid = queue(db, "Ответ юриста")
    real_finish = outbound._finish

    def finish(runtime: Runtime, message_id: int, **values: object) -> str:
        if values.get("message_sid"):  # Twilio's callback beats our UPDATE
            form = {"MessageSid": str(values["message_sid"]), "AccountSid": ACCOUNT_SID,
                    "From": "+77000000000", "To": CALLER, "MessageStatus": "undelivered",
                    "ErrorCode": "30003"}
            assert twilio.post("/sms/status", form).status_code == 204
        return real_finish(runtime, message_id, **values)

    monkeypatch.setattr(outbound, "_finish", finish)
    send_sms(rt, mid)
    assert load(db, mid).status == "queued"  # the callback was dropped
    [accepted] = api.messages
    accepted.update(status="undelivered", error_code=30003)  # what Twilio knows
    now = datetime.now(UTC)
    assert reconcile_statuses(rt, now) == 0  # too soon: the callback may yet come
    later = now + RECONCILE_AFTER + timedelta(minutes=1)
    assert reconcile_statuses(rt, later) == 1
    message = load(db, mid)
    assert (message.status, message.error_code) == ("undelivered", 30003)
    assert reconcile_statuses(rt, later + timedelta(days=1)) == 0  # final: asked no more

    other = queue(db, "Второй ответ")
    send_sms(rt, other)
    api.messages[-1].update(status="sent")
    assert reconcile_statuses(rt, later) == 1
    assert load(db, other).status == "sent"
    assert reconcile_statuses(rt, later + timedelta(minutes=5)) == 0  # waits longer now
    assert reconcile_statuses(rt, later + timedelta(minutes=31)) == 1  # 30 minutes later


def test_asking_twilio_about_statuses_reads_only_the_messages_due(
        rt: Runtime, db: Db, api: TwilioApi) -> None:
    """Hundreds of messages that never get final news (carriers that report no delivery)
    wait for their next question: a message sent now is asked about 15 minutes after it was
    sent, not after them; one written hours ago and sent late (held for the morning) too,
    counted from its sending. Each is asked about a few times, then no more."""
    now = datetime.now(UTC)
    with db() as session:
        for i in range(300):
            session.add(SmsMessage(direction="out", status="sent", phone=CALLER, body="x",
                                   message_sid=f"SM{i:032x}", created_at=now - timedelta(hours=20),
                                   updated_at=now - timedelta(hours=17),
                                   status_check_at=now + timedelta(hours=3), status_checks=5))
    late = queue(db, "Ответ, отправленный утром")
    with db() as session:
        message = session.get(SmsMessage, late)
        assert message is not None
        message.created_at = now - timedelta(hours=12)
    rt.settings = rt.settings.override(callback_hours=(0, 24))
    send_sms(rt, late)
    api.messages[-1].update(status="undelivered", error_code=30003)
    assert reconcile_statuses(rt, now + timedelta(minutes=16)) == 1
    assert load(db, late).status == "undelivered"
    for hours in range(4, 200):
        reconcile_statuses(rt, now + timedelta(hours=hours))
    # Each old one (Twilio's stand-in does not know them: 404) asked its last three times,
    # then no more.
    with db() as session:
        old = session.scalars(select(SmsMessage).where(SmsMessage.body == "x")).all()
        assert {(m.status_checks, m.status_check_at) for m in old} == {(8, None)}
    fetches = [r for r in api.requests if r.method == "GET" and "/Messages/SM" in r.path]
    assert len(fetches) == 1 + 300 * 3


def test_a_round_that_twilio_cuts_short_loses_no_check(
        rt: Runtime, db: Db, api: TwilioApi) -> None:
    """Twilio answers 503 to the first question: the round ends, and neither message loses a
    check (one at its last would never be asked again): both are asked once the claim's
    lease has passed, and the undelivered one gets its status."""
    first, last = queue(db, "Первый ответ"), queue(db, "Последний ответ")
    send_sms(rt, first)
    send_sms(rt, last)
    for accepted in api.messages:
        accepted.update(status="undelivered", error_code=30003)
    with db() as session:
        message = session.get(SmsMessage, last)
        assert message is not None
        message.status_checks = 7  # its last question is due
    due = datetime.now(UTC) + RECONCILE_AFTER + timedelta(minutes=1)
    api.fail_next(SERVER_ERROR, resource=MESSAGE_RECORDS)
    assert reconcile_statuses(rt, due) == 0
    assert reconcile_statuses(rt, due + timedelta(minutes=1)) == 0  # claimed: not yet
    assert reconcile_statuses(rt, due + RECONCILE_LEASE + timedelta(seconds=1)) == 2
    assert (load(db, first).status, load(db, last).status) == ("undelivered", "undelivered")
    assert (load(db, first).status_checks, load(db, last).status_checks) == (1, 8)
