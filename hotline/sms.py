"""The SMS webhook: Twilio posts a resident's message, the dialogue answers with TwiML."""

from __future__ import annotations

import logging
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from flask import Blueprint, Response, abort, request
from sqlalchemy.orm import Session
from twilio.twiml.messaging_response import MessagingResponse
from werkzeug.exceptions import HTTPException, InternalServerError

from flows.segments import segments
from flows.sms import (
    SmsDialogue,
    SmsReply,
    SmsState,
    clean_text,
    fallback_kind,
    is_opt_keyword,
)
from hotline.twilio_glue import runtime, signed_by_twilio, twilio_webhook
from storage import sms
from storage.calls import touch_caller
from storage.db import retry_conflicts, unit_of_work
from storage.models import Caller, SmsMessage
from storage.phones import normalise_phone
from storage.utc import ensure_utc

log = logging.getLogger(__name__)

bp = Blueprint("sms", __name__, url_prefix="/sms")

MESSAGE_SID = re.compile(r"^(SM|MM)[0-9a-fA-F]{32}$")
MAX_BODY = 1600  # Twilio's longest message
RATE_WINDOW = timedelta(minutes=10)
QUESTION_WINDOW = timedelta(days=1)
# How long "0" after a topic answer passes the answered message to a lawyer (_answered_text).
ANSWERED_TEXT_HOURS = 24


def _twiml(reply: str | None) -> Response:
    response = MessagingResponse()
    if reply:
        response.message(reply)
    return Response(str(response), mimetype="application/xml")


def _state(session: Session, caller: Caller | None, key: bytes, inbound: SmsMessage,
           now: datetime) -> SmsState:
    if caller is None:
        return SmsState()
    return SmsState(language=caller.language, opted_out=sms.opted_out(session, caller, key),
                    last_topic=caller.sms_topic, more=caller.sms_more,
                    awaiting_question=caller.sms_awaiting_question,
                    question_open=sms.has_open_question(session, caller.id),
                    answered_text=_answered_text(session, caller, inbound, now))


def _answered_text(session: Session, caller: Caller, inbound: SmsMessage,
                   now: datetime) -> str | None:
    """The message the last topic answer replied to, while "0" can still mean "pass it on":
    only if it is the resident's previous message, and of the last ANSWERED_TEXT_HOURS. A "0"
    days later, or after other messages (a thanks, ones past the rate limit), asks for the
    question instead of queueing an old one."""
    answered = caller.sms_answered_text
    if answered is None:
        return None
    previous = sms.previous_inbound(session, inbound.phone, inbound)
    if previous is None or previous.body != answered or ensure_utc(previous.created_at) < (
            now - timedelta(hours=ANSWERED_TEXT_HOURS)):
        return None
    return answered


def _remember(caller: Caller, state: SmsState) -> None:
    # The language only when known: the phone tree reads it too (and skips its language menu).
    caller.language = state.language or caller.language
    caller.sms_topic = state.last_topic
    caller.sms_more = state.more
    caller.sms_awaiting_question = state.awaiting_question
    caller.sms_answered_text = state.answered_text


@bp.post("/incoming")
@twilio_webhook
@retry_conflicts
def incoming() -> Response:
    """Answer a resident's SMS at once: a menu, an answer, or a question for a lawyer."""
    message_sid = request.form.get("MessageSid", "")
    if not MESSAGE_SID.fullmatch(message_sid):
        abort(400, description="MessageSid is missing or malformed")
    # No NUL: PostgreSQL refuses it in text (an unknown number is stored as given).
    raw_from = request.form.get("From", "").replace("\x00", "")[:64]
    body = clean_text(request.form.get("Body", ""))[:MAX_BODY]
    rt = runtime()
    settings = rt.settings
    dialogue: SmsDialogue = rt.sms
    now = datetime.now(UTC)
    phone = normalise_phone(raw_from, settings.default_region)
    with unit_of_work(rt.sessions) as session:
        caller = touch_caller(session, phone, now) if phone else None
        inbound, new = sms.record_inbound(session, message_sid=message_sid,
                                          phone=phone or raw_from, body=body, caller=caller,
                                          now=now)
        if not new:
            # Twilio retried: the first request answered (or is answering); never twice.
            return _twiml(None)
        state = _state(session, caller, rt.pseudonym_key, inbound, now)
        recent = sms.count_inbound_since(session, inbound.phone, now - RATE_WINDOW)
        if recent > settings.sms_rate_limit and not state.opted_out and (
            not is_opt_keyword(body)
        ):
            # One polite answer when the limit is crossed, then silence until it cools down;
            # what the messages say is kept for the lawyer all the same.
            language = caller.language if caller else None
            # (A keyword, a menu key, a greeting or a thanks is nobody's question.)
            if caller is not None and fallback_kind(body, language,
                                                    state.question_open) == "question":
                kept = sms.keep_sms_text(session, caller=caller, text=body, language=language,
                                         topic=None, now=now,
                                         pseudonym_key=rt.pseudonym_key)
                inbound.question_id = kept.id if kept is not None else None
            text = dialogue.rate_limited(language)
            reply_text = text if recent == settings.sms_rate_limit + 1 else None
            return _reply(session, inbound, reply_text, now)
        reply = dialogue.reply(body, state)
        if reply.question_text is not None and caller is not None and (
            sms.count_sms_questions_since(session, caller, now - QUESTION_WINDOW)
            >= settings.sms_questions_per_day
        ):
            # Past the day's questions: no new place in the queue, but the text reaches the
            # lawyer with the resident's open question (and the reply says it was passed on).
            kept = sms.keep_sms_text(session, caller=caller, text=reply.question_text,
                                     language=reply.state.language,
                                     topic=reply.question_topic, now=now,
                                     pseudonym_key=rt.pseudonym_key)
            if kept is None:  # (an opted-out resident is told nothing, ever)
                reply = SmsReply(None if state.opted_out else dialogue.rate_limited(
                    reply.state.language), reply.state, kind="rate-limited")
            else:
                reply = replace(reply, question_text=None)
                inbound.question_id = kept.id
        if reply.question_text is not None:
            question = sms.add_sms_question(session, caller=caller, text=reply.question_text,
                                            language=reply.state.language,
                                            topic=reply.question_topic, now=now,
                                            pseudonym_key=rt.pseudonym_key)
            inbound.question_id = question.id
        inbound.language = reply.state.language
        if caller is not None:
            if reply.kind in ("stop", "start"):
                sms.set_opted_out(session, caller, reply.kind == "stop", now,
                                  key=rt.pseudonym_key)
            _remember(caller, reply.state)
        return _reply(session, inbound, reply.text, now)


def _reply(session: Session, inbound: SmsMessage, text: str | None, now: datetime) -> Response:
    if text:
        parts = segments(text)
        sms.record_reply(session, to=inbound, body=text, encoding=parts.encoding,
                         segments=parts.parts, now=now)
    return _twiml(text)


@bp.errorhandler(Exception)
def keep_the_message(error: Exception) -> Response | HTTPException:
    """If answering failed, still keep what the message asks for.

    STOP and START still opt the resident out and in (and say so); a thanks gets no answer, as
    in the dialogue; another keyword or a menu key gets the menu, to try again; any other text
    is queued for a lawyer, and the resident is told it was received.
    """
    if isinstance(error, HTTPException):
        return error
    if not signed_by_twilio():
        # Failed before (or in) the signature's check: nobody's message to keep.
        log.exception("SMS webhook failed before its signature was checked")
        return InternalServerError()
    log.exception("SMS webhook failed")
    rt = runtime()
    body = clean_text(request.form.get("Body", ""))[:MAX_BODY]
    now = datetime.now(UTC)
    try:
        with unit_of_work(rt.sessions) as session:
            raw_from = request.form.get("From", "").replace("\x00", "")[:64]
            phone = normalise_phone(raw_from, rt.settings.default_region)
            caller = touch_caller(session, phone, now) if phone else None
            inbound, new = sms.record_inbound(
                session, message_sid=request.form.get("MessageSid", ""),
                phone=phone or raw_from, body=body, caller=caller, now=now)
            if not new or not body:
                return _twiml(None)
            # As the dialogue would have read it ("БАСТА" is a stop in Russian).
            language = rt.sms.language_for(body, caller.language if caller else None)
            kind = fallback_kind(body, language, caller is not None and sms.has_open_question(
                session, caller.id))
            if kind in ("stop", "start"):
                if caller is None:
                    return _twiml(None)  # no number to remember it for
                sms.set_opted_out(session, caller, kind == "stop", now, key=rt.pseudonym_key)
                return _reply(session, inbound, rt.sms.text(language, f"sms.{kind}"), now)
            opted_out = caller is not None and sms.opted_out(session, caller, rt.pseudonym_key)
            if opted_out and kind != "question":
                return _twiml(None)
            if kind == "thanks":
                return _reply(session, inbound, None, now)  # as the dialogue: no answer
            if kind == "command":
                return _reply(session, inbound, rt.sms.text(language, "sms.menu"), now)
            # Free text: its own language first, as in the dialogue (None when unknown).
            known = caller.language if caller else None
            written_in = rt.sms.detected_language(body, known) or known
            question = sms.add_sms_question(session, caller=caller, text=body,
                                            language=written_in, topic=None, now=now,
                                            pseudonym_key=rt.pseudonym_key)
            inbound.question_id = question.id
            if opted_out:  # kept for the lawyers, as the dialogue does; nothing sent
                return _reply(session, inbound, None, now)
            return _reply(session, inbound, rt.sms.text(written_in or language,
                                                        "sms.question_received"), now)
    except Exception:  # noqa: BLE001 - the last line of defence must answer
        log.exception("could not even keep the SMS")
        return _twiml(None)
