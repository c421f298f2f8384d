"""An SMS receipt for a recorded question: it is saved, and the number the lawyer calls from.

Elderly residents often do not answer a number they do not know, and a callback comes days
later from a number they have never seen. The receipt puts the hotline's number in writing the
evening they called (a relative can save it in their phone), with the promise they heard.

The download job (hotline.jobs) asks for it before it fetches the audio, so a failed download
does not hold it back, and the webhooks Twilio times do not spend anything on it. It goes:
- only for a voice question whose caller's number is a mobile one (phonenumbers' type: an SMS
  to a landline is lost and still costs), not pseudonymised, not opted out (STOP);
- once per question: an SMS with purpose "receipt" for it means it went (a download job run
  twice, or re-run by the sweep, sends none);
- at most one per resident in RECEIPT_QUIET: three questions recorded in one evening get one.
  The caller's row is locked while deciding (FOR NO KEY UPDATE, then the question's, the order
  storage.claims keeps), so two workers fetching two of their questions at once decide one
  after the other;
- only within RECEIPT_MAX_AGE of the call, and not for a closed question: a receipt is for the
  call just made. After a worker outage, a backlog fetched at 03:00 must not wake an elderly
  resident with an SMS about last evening; nor one stored late by the catch-up. Outside the
  calling hours (HOTLINE_CALLBACK_HOURS, Almaty) only within RECEIPT_NIGHT_DELAY of the call:
  a resident who called at 23:00 is awake at 23:01, perhaps not at 00:30.
HOTLINE_RECEIPT_SMS turns it off (on by default; off in demo mode, which has no Twilio).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import phonenumbers
from sqlalchemy import select
from sqlalchemy.orm import Session

from flows.segments import segments
from hotline.config import LOCAL_TIME
from hotline.runtime import Runtime
from storage.callbacks import within_hours
from storage.claims import lock_resident_of
from storage.db import unit_of_work
from storage.models import (
    CHANNEL_VOICE,
    QUESTION_CLOSED,
    SMS_RECEIPT,
    Question,
    Recording,
)
from storage.retention import is_pseudonym
from storage.sms import opted_out, queue_outbound, sent_for
from storage.utc import ensure_utc

log = logging.getLogger(__name__)

RECEIPT_QUIET = timedelta(hours=12)
RECEIPT_MAX_AGE = timedelta(hours=2)
RECEIPT_NIGHT_DELAY = timedelta(minutes=15)
SMS_NUMBER_TYPES = frozenset({phonenumbers.PhoneNumberType.MOBILE,
                              phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE})


def resident_language(runtime: Runtime, question: Question) -> str:
    """The language to write to the question's resident in: the question's, the caller's
    remembered one, or the content's first."""
    prompts = runtime.flow.content.prompts
    caller = question.caller
    return next((code for code in (question.language, caller.language if caller else None)
                 if code in prompts), runtime.sms.default_language)


def can_take_sms(phone: str) -> bool:
    """Whether an E.164 number is one an SMS can reach (a mobile, or a number that may be)."""
    try:
        number = phonenumbers.parse(phone, None)
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.number_type(number) in SMS_NUMBER_TYPES


def receipt_text(runtime: Runtime, question: Question) -> tuple[str, str]:
    """The receipt in the resident's language; (language, text)."""
    language = resident_language(runtime, question)
    text = runtime.flow.content.text(language, "sms.question_recorded")
    text = text.replace("{days}", str(runtime.settings.callback_days))
    return language, text.replace("{number}", runtime.settings.twilio_phone_number).strip()


def too_late(runtime: Runtime, question: Question, now: datetime) -> str | None:
    """Why a receipt for the question would come too late now (the question closed, the call
    too long ago, or the night come since), or None. Asked when the receipt is queued and
    again when it is sent (hotline.outbound_sms: a send retried for hours, through a Twilio
    outage, must not wake the resident at 03:00, nor promise a call already made)."""
    if question.status == QUESTION_CLOSED:
        return "closed"
    age = now - ensure_utc(question.created_at)
    if age > RECEIPT_MAX_AGE:
        return "too old"
    if age > RECEIPT_NIGHT_DELAY and not within_hours(now, runtime.settings.callback_hours,
                                                      LOCAL_TIME):
        return "too late at night"
    return None


def _wanted(session: Session, runtime: Runtime, question: Question, now: datetime) -> str | None:
    """Why no receipt goes for the question, or None if one should."""
    caller = question.caller
    if question.channel != CHANNEL_VOICE:
        return "not a voice question"
    late = too_late(runtime, question, now)
    if late is not None:
        return late
    if caller is None or is_pseudonym(caller.phone):
        return "no number"
    if not can_take_sms(caller.phone):
        return "not a mobile number"
    if sent_for(session, SMS_RECEIPT, question_id=question.id):
        return "sent already"
    if sent_for(session, SMS_RECEIPT, caller_id=caller.id, since=now - RECEIPT_QUIET):
        return "the resident had one lately"
    if opted_out(session, caller, runtime.pseudonym_key):
        return "opted out"
    return None


def queue_receipt(runtime: Runtime, recording_id: int, now: datetime | None = None) -> int | None:
    """Queue the receipt for the recording's question if it is wanted; return the SMS's id
    (the caller enqueues the sending job after this commits)."""
    settings = runtime.settings
    if not settings.receipt_sms or not settings.twilio_phone_number:
        return None
    now = now or datetime.now(UTC)
    with unit_of_work(runtime.sessions) as session:
        question_id = session.scalar(select(Recording.question_id)
                                     .where(Recording.id == recording_id))
        if question_id is None:
            return None
        lock_resident_of(session, question_id)
        question = session.scalars(select(Question).where(Question.id == question_id)
                                   .with_for_update()).one_or_none()
        if question is None:
            return None
        refused = _wanted(session, runtime, question, now)
        if refused is not None:
            log.debug("no receipt for question %s: %s", question.id, refused)
            return None
        caller = question.caller
        assert caller is not None  # _wanted checked
        language, text = receipt_text(runtime, question)
        parts = segments(text)
        message = queue_outbound(session, phone=caller.phone, body=text, language=language,
                                 caller=caller, question_id=question.id,
                                 encoding=parts.encoding, segments=parts.parts, now=now,
                                 purpose=SMS_RECEIPT)
        log.info("receipt SMS %s queued for question %s", message.id, question.id)
        return message.id
