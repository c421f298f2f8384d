"""Calling a resident back through the consultant's phone, the outcome form, and SMS answers.

Routes for consultants are on the workspace blueprint (behind its login check); Twilio's
webhooks for the bridged call are on `hooks`, signed like every Twilio route and CSRF-exempt.

The bridge: "Call" makes Twilio call the consultant's own phone (User.phone) through the REST
API, with the hotline's number as caller ID. When they answer, Twilio fetches the answer URL,
whose TwiML says in Russian that the resident is being connected and dials the resident with
the hotline's number as caller ID; the resident never sees the consultant's own number. If the
consultant released or closed the question meanwhile (or it went to someone else), the answer
says so and hangs up: the resident is not dialled.

What the consultant hears is Russian whatever their interface language, by decision: Twilio
has no Kazakh voice (the residents' Kazakh prompts are pre-rendered audio <Play>ed from
hotline.prompts, made from the flow's content), these sentences carry the question's number,
which pre-rendered audio cannot, and the consultants are lawyers who all work in Russian.
Kazakh would need the sentences as flow prompts (without the number) and the consultant's
language in the signed answer URL. Both legs report their statuses (initiated, ringing,
answered, completed...) to status callbacks; the Dial's action reports how the resident leg
ended. storage.callbacks turns those into the attempt's state, whatever their order.

An answering machine or voicemail picking up the consultant's phone (Twilio's answering
machine detection, AnsweredBy) hangs up at once: the resident is never connected to a
voicemail box.

The outcome form (any time the user holds the question; they may have called by other means):
resolved and wrong number close the question; follow-up keeps the referral and returns the
question to the queue for whoever continues the case; no answer counts a failed attempt,
plans the next one in the daytime window and returns the question to the queue, or after the
last allowed attempt closes it and sends the resident an SMS saying how to reach the hotline.
That SMS is sent at once, even late in the evening: delaying it would need a state the sweep
leaves alone, because hotline.outbound_sms.messages_to_send re-sends every queued message
untouched for HOTLINE_STALE_SECONDS (a Huey job scheduled for the morning would be beaten by
the sweep within minutes). It is a short text message, not a call.

Twilio's own error texts (English) are kept as they are and shown as secondary detail under a
translated sentence (the panel's <small lang="en">).

A consultant's SMS answer with the same text as their own one to the same question less than
DUPLICATE_SMS_WINDOW ago is not sent again (a double click, a form sent twice).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import requests
from flask import (
    Blueprint,
    Response,
    abort,
    flash,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import or_, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, object_session
from twilio.base.exceptions import TwilioRestException, TwilioServiceException
from twilio.twiml.voice_response import Dial, VoiceResponse

from flows.segments import segments
from hotline import auth, jobs
from hotline.auth import Account, client_address
from hotline.config import LOCAL_TIME, Settings
from hotline.outbound_sms import WAITING_FOR_MORNING, close_twilio_client, make_twilio_client
from hotline.receipts import can_take_sms, resident_language
from hotline.twilio_glue import CALL_SID, external_url, form_int, form_sid, twilio_webhook
from hotline.twilio_glue import runtime as twilio_runtime
from hotline.workspace import bp, local_time, runtime, topic_title
from storage import audit
from storage import callbacks as store
from storage.claims import held_siblings, lock_resident_of, touch_claim
from storage.db import is_conflict, retry_conflicts, unit_of_work
from storage.models import (
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
    QUESTION_CLAIMED,
    QUESTION_CLOSED,
    ROLE_CONSULTANT,
    ROLE_COORDINATOR,
    SMS_FINAL_STATUSES,
    SMS_GAVE_UP,
    SMS_IN,
    SMS_QUEUED,
    CallbackAttempt,
    Question,
    SmsMessage,
    User,
    utcnow,
)
from storage.question_page import AUDIT_REPEAT_WINDOW, record_once
from storage.sms import opted_out as sms_opted_out
from storage.sms import queue_outbound

log = logging.getLogger(__name__)

hooks = Blueprint("callback_hooks", __name__, url_prefix="/callbacks")

TWIML = "application/xml"
# How long Twilio rings the consultant's phone, and then the resident's.
CONSULTANT_RING_SECONDS = 30
RESIDENT_RING_SECONDS = 30
CALL_EVENTS = ["initiated", "ringing", "answered", "completed"]
CALL_STATUS = re.compile(r"^[a-z][a-z-]{0,19}$")
# Twilio's AnsweredBy values for a machine (answering machine detection on the consultant leg).
MACHINE_ANSWERS = frozenset({"machine_start", "machine_end_beep", "machine_end_silence",
                             "machine_end_other", "fax"})
ERROR_MACHINE = "an answering machine took the call to your phone: the resident was not called"
ERROR_NO_RESIDENT_PHONE = "the resident's phone number is not known"
# The start of CallbackAttempt.error when Twilio was not reached or gave no CallSid (then what
# it gave, in brackets); any other error not of ours is Twilio's own message.
ERROR_UNREACHABLE = "Twilio could not be reached"
ERROR_NO_CALL_ID = "Twilio answered without a call id"
TWILIO_CLIENT_PREFIX = "Unable to create record: "
# A consultant's SMS answer: at most this many parts (flows.segments).
MAX_SMS_PARTS = 6
MAX_REFERRAL_CHARS = 2000
# How long the panel keeps polling an SMS that has not reached a final status.
SMS_POLL_FOR = timedelta(hours=1)
# The same SMS text from the same consultant to the same question within this is a duplicate.
DUPLICATE_SMS_WINDOW = timedelta(seconds=60)

# Why the Call button does not work for a consultant without a phone number of their own.
NO_OWN_PHONE = _l("Your account has no phone number for the hotline to call you on. Add it on "
                  "your account page.")

# A number SMS cannot reach (phonenumbers says a fixed line: hotline.receipts.can_take_sms):
# the SMS form is not offered, and the "we tried to call you" SMS is not sent.
LANDLINE = _l("The resident's number is a landline: an SMS cannot reach it. Please call them "
              "instead.")
# What the consultant hears on their phone (Russian for everyone: see the module's docstring).
SAY_CONNECTING = "Вопрос номер {id}. Соединяем вас с жителем, подождите, пожалуйста."
SAY_OVER = "Этот звонок уже завершён. До свидания."
SAY_NO_PHONE = "Номер жителя неизвестен. Звонок завершён."
SAY_NOT_YOURS = ("Вопрос номер {id} больше не закреплён за вами: он возвращён в очередь или "
                 "закрыт. Жителю звонить не будем. До свидания.")
SAY_DIALED = {
    "completed": "Разговор завершён. Отметьте, пожалуйста, результат на странице вопроса.",
    "no-answer": "Житель не ответил. Отметьте, пожалуйста, результат на странице вопроса.",
    "busy": "Линия жителя занята. Отметьте, пожалуйста, результат на странице вопроса.",
}
SAY_DIAL_FAILED = "Не удалось дозвониться до жителя. Отметьте результат на странице вопроса."

OUTCOME_WORDS = {
    OUTCOME_RESOLVED: _l("Resolved"),
    OUTCOME_FOLLOW_UP: _l("Needs follow-up (referred to an organisation)"),
    OUTCOME_NO_ANSWER: _l("No answer"),
    OUTCOME_WRONG_NUMBER: _l("Wrong number"),
}
KNOWN_ERRORS = {
    ERROR_MACHINE: _l("An answering machine took the call to your phone, so the resident was "
                      "not called."),
    ERROR_NO_RESIDENT_PHONE: _l("The resident's phone number is not known."),
    store.ERROR_NO_NEWS: _l("Twilio sent no news about this call."),
    store.ERROR_CONSULTANT_FAILED: _l("Twilio could not call your phone."),
    store.ERROR_WITHDRAWN: _l("The question was released or closed during the call."),
}
# Errors of ours that end with what Twilio gave (in brackets), shown as detail.
PREFIXED_ERRORS = {
    ERROR_UNREACHABLE: _l("Twilio could not be reached."),
    ERROR_NO_CALL_ID: _l("Twilio gave no id for the call, so its progress cannot be followed."),
}
SMS_ERRORS = {
    21610: _l("the resident has opted out of SMS (STOP)"),
    30003: _l("the phone is switched off or out of coverage"),
    30005: _l("the number is unknown or no longer in use"),
    30006: _l("the number cannot receive SMS"),
    30007: _l("the carrier blocked the message"),
}


# -- the panel --------------------------------------------------------------------------------

@dataclass(frozen=True)
class AttemptView:
    """One callback attempt as the panel shows it."""

    id: int
    started: str
    consultant: str
    status: str
    # ok (connected or talked), wait (under way), bad (no answer, busy, failed)
    tone: str
    live: bool
    outcome: str | None
    # Twilio's own words about a failure (English), shown smaller under the status.
    detail: str | None = None


@dataclass(frozen=True)
class SmsView:
    """One SMS of the question's conversation."""

    id: int
    at: str
    direction: str
    who: str
    body: str
    status: str
    tone: str
    # Twilio's own words about a failure (English), shown smaller under the status.
    detail: str | None = None


@dataclass(frozen=True)
class SiblingView:
    """Another question of the resident that the user holds: one call answers both."""

    id: int
    received: str
    topic: str


@dataclass(frozen=True)
class CallbackPanel:
    """What templates/callback_panel.html shows."""

    question_id: int
    panel_url: str
    holder: bool
    closed: bool
    closed_as: str | None
    resident_phone: str | None
    call_blocker: str | None
    needs_phone: bool  # the blocker is the consultant's own missing number (My account)
    current: AttemptView | None
    live: bool
    earlier: list[AttemptView]
    failed_attempts: int
    max_attempts: int
    next_callback: str | None
    retry_early: bool
    referral: str | None
    outcomes: list[tuple[str, str]]
    suggested: str | None
    sms_blocker: str | None
    sms: list[SmsView]
    # Earlier SMS are not listed: the list holds the latest this many.
    sms_earlier: int | None
    sms_live: bool
    max_sms_parts: int
    # The resident's other questions the user holds (the outcome form offers them the same).
    siblings: list[SiblingView]
    # The outcome that needs a referral (static/workspace.js asks for one before sending).
    follow_up: str = OUTCOME_FOLLOW_UP


def _mask(phone: str | None) -> str | None:
    """A phone number shown only by its last digits."""
    return f"…{phone[-4:]}" if phone else None


def _duration(seconds: int) -> str:
    return f"{seconds // 60}:{seconds % 60:02d}"


def _error_words(error: str | None) -> tuple[str, str | None]:
    """A translated sentence for an attempt's error, and Twilio's own words if any (detail)."""
    if not error:
        return str(_("Twilio could not place the call.")), None
    known = KNOWN_ERRORS.get(error)
    if known is not None:
        return str(known), None
    for prefix, words in PREFIXED_ERRORS.items():
        if error.startswith(prefix):
            return str(words), error.removeprefix(prefix).strip(" ()") or None
    return str(_("Twilio refused to make the call.")), error  # Twilio's own message


def _attempt_status(attempt: CallbackAttempt, now: datetime) -> tuple[str, str, str | None]:
    """The attempt's state in words, its tone, and Twilio's own words about a failure."""
    if attempt.state in store.LIVE_STATES and not store.is_live(attempt, now):
        return str(_("No news from Twilio about this call since %(time)s.",
                     time=local_time(attempt.updated_at))), "bad", None
    if attempt.state == CALLBACK_FAILED:
        words, detail = _error_words(attempt.error)
        return str(_("Failed: %(error)s", error=words)), "bad", detail
    status, tone = _ongoing_or_ended(attempt)
    return status, tone, None


def _ongoing_or_ended(attempt: CallbackAttempt) -> tuple[str, str]:
    """The state in words and its tone, for an attempt going on or ended (not failed)."""
    consultant, resident = attempt.consultant_status, attempt.resident_status
    if attempt.state == CALLBACK_DIALING:
        if consultant == "ringing":
            return str(_("Your phone is ringing: answer it.")), "wait"
        return str(_("Calling your phone…")), "wait"
    if attempt.state == CALLBACK_BRIDGING:
        if resident == "ringing":
            return str(_("You answered. The resident's phone is ringing…")), "wait"
        return str(_("You answered. Calling the resident…")), "wait"
    if attempt.state == CALLBACK_CONNECTED:
        return str(_("Connected with the resident.")), "ok"
    if store.resident_answered(attempt):
        if attempt.duration:
            return str(_("Ended: you talked for %(duration)s.",
                         duration=_duration(attempt.duration))), "ok"
        return str(_("Ended: you talked with the resident.")), "ok"
    if attempt.error in KNOWN_ERRORS:
        return str(_("Ended: %(reason)s", reason=_error_words(attempt.error)[0])), "bad"
    words = {
        "no-answer": _("Ended: the resident did not answer."),
        "busy": _("Ended: the resident's line was busy."),
        "failed": _("Ended: the call to the resident failed."),
        "canceled": _("Ended: the call ended before the resident answered."),
    }.get(resident or "")
    if words is None:
        words = {
            "no-answer": _("Ended: you did not answer your phone."),
            "busy": _("Ended: your phone was busy."),
            "canceled": _("Ended: the call was cancelled."),
        }.get(consultant or "", _("Ended before the resident was called."))
    return str(words), "bad"


def _attempt_view(attempt: CallbackAttempt, now: datetime) -> AttemptView:
    status, tone, detail = _attempt_status(attempt, now)
    return AttemptView(
        id=attempt.id, started=local_time(attempt.created_at),
        consultant=attempt.consultant.name if attempt.consultant else "—",
        status=status, tone=tone, live=store.is_live(attempt, now),
        outcome=str(OUTCOME_WORDS[attempt.outcome]) if attempt.outcome in OUTCOME_WORDS
        else None, detail=detail)


def sms_status_words(message: SmsMessage) -> str:
    """An SMS's status in the page's language (the question page's history of the caller)."""
    return _sms_status(message)[0]


def _sms_status(message: SmsMessage) -> tuple[str, str, str | None]:
    """An SMS's delivery status in words, its tone, and Twilio's own words (detail)."""
    if message.direction == SMS_IN:
        return str(_("received")), "ok", None
    words, tone = {
        "delivered": (_("delivered"), "ok"),
        "read": (_("delivered"), "ok"),
        "sent": (_("sent, waiting for delivery"), "wait"),
        "undelivered": (_("not delivered"), "bad"),
        "failed": (_("failed"), "bad"),
        "replied": (_("sent as an automatic reply"), "ok"),
        "canceled": (_("cancelled"), "bad"),
    }.get(message.status, (_("waiting to be sent"), "wait"))
    if message.status == SMS_QUEUED and message.error_message == WAITING_FOR_MORNING:
        # Its sending failed in the evening and was tried again after the calling hours
        # (hotline.outbound_sms._late): the lawyer is told why it has not gone yet.
        words = _("waiting for the calling hours: it goes in the morning")
    text = str(words)
    detail: str | None = None
    if message.error_code is not None:
        reason = SMS_ERRORS.get(message.error_code)
        if reason is not None:
            text = str(_("%(status)s (Twilio error %(code)s: %(detail)s)", status=text,
                         code=message.error_code, detail=reason))
        else:
            text = str(_("%(status)s (Twilio error %(code)s)", status=text,
                         code=message.error_code))
            detail = _twilios_words(message.error_message)
    elif message.error_message and tone == "bad":
        detail = _twilios_words(message.error_message)
    return text, tone, detail


def _twilios_words(message: str | None) -> str | None:
    # The client puts "Unable to create record: " before Twilio's own message.
    return message.removeprefix(TWILIO_CLIENT_PREFIX) or None if message else None


# The panel lists at most this many SMS of a question: the latest ones.
SMS_SHOWN = 100


def _sms_of(session: Session, question: Question) -> tuple[list[SmsMessage], bool]:
    """The question's SMS, and what its resident wrote since it came in: the latest SMS_SHOWN,
    oldest first, and whether there are earlier ones. The latest, not the first: a resident who
    keeps writing must not push the consultant's answer, and its delivery status, off the list."""
    condition = SmsMessage.question_id == question.id
    if question.caller_id is not None:
        condition = or_(condition, (SmsMessage.caller_id == question.caller_id)
                        & (SmsMessage.direction == SMS_IN)
                        & (SmsMessage.created_at >= question.created_at))
    newest = list(session.scalars(
        select(SmsMessage).where(condition)
        .order_by(SmsMessage.created_at.desc(), SmsMessage.id.desc())
        .limit(SMS_SHOWN + 1)))
    return newest[:SMS_SHOWN][::-1], len(newest) > SMS_SHOWN


def _sms_view(session: Session, message: SmsMessage) -> SmsView:
    status, tone, detail = _sms_status(message)
    if message.direction == SMS_IN:
        who = str(_("Resident"))
    elif message.sent_by_id is not None:
        author = session.get(User, message.sent_by_id)
        who = author.name if author else "—"
    else:
        who = str(_("Hotline (automatic)"))
    return SmsView(id=message.id, at=local_time(message.created_at),
                   direction=message.direction, who=who, body=message.body, status=status,
                   tone=tone, detail=detail)


def _suggested(current: CallbackAttempt | None) -> str | None:
    """The outcome the last call suggests (the consultant still chooses)."""
    if current is None or current.state not in (CALLBACK_ENDED, CALLBACK_FAILED):
        return None
    if current.resident_status in ("no-answer", "busy"):
        return OUTCOME_NO_ANSWER
    return None


def build_panel(session: Session, question: Question, account: Account,
                now: datetime) -> CallbackPanel:
    """Gather what the panel shows for this user."""
    settings = runtime().settings
    holder = question.status == QUESTION_CLAIMED and question.claimed_by_id == account.id
    user = session.get(User, account.id)
    resident_phone = question.caller.phone if question.caller else None
    attempts = store.attempts_of(session, question.id)
    current = attempts[0] if attempts else None
    live = current is not None and store.is_live(current, now)
    call_blocker = None
    needs_phone = False
    if user is None or not user.phone:
        call_blocker = str(NO_OWN_PHONE)
        needs_phone = True
    elif resident_phone is None:
        call_blocker = str(_("No phone number is known for this resident."))
    elif not live:
        # A call that began before the hours ended goes on: the panel, polled every 3 s while
        # it does, would otherwise say "call in the morning" (an alert) over the conversation.
        call_blocker = _outside_calling_hours(settings)
    sms_blocker = None
    if question.caller is None:
        sms_blocker = str(_("No phone number is known for this resident."))
    elif not can_take_sms(question.caller.phone):
        sms_blocker = str(LANDLINE)
    elif sms_opted_out(session, question.caller, runtime().pseudonym_key):
        sms_blocker = str(_("The resident has opted out of SMS (STOP): no SMS can be sent "
                            "to them."))
    messages, earlier_sms = _sms_of(session, question)
    sms_live = any(m.direction != SMS_IN and m.status not in SMS_FINAL_STATUSES
                   and m.status not in ("replied", "canceled")
                   and now - m.created_at < SMS_POLL_FOR for m in messages)
    next_at = question.next_callback_at
    return CallbackPanel(
        question_id=question.id,
        panel_url=url_for("workspace.callback_panel", question_id=question.id),
        holder=holder,
        closed=question.status == QUESTION_CLOSED,
        closed_as=question.close_reason,
        resident_phone=_mask(resident_phone),
        call_blocker=call_blocker,
        needs_phone=needs_phone,
        current=_attempt_view(current, now) if current else None,
        live=live,
        earlier=[_attempt_view(a, now) for a in attempts[1:]],
        failed_attempts=question.callback_attempts or 0,
        max_attempts=settings.callback_attempts,
        next_callback=local_time(next_at) if next_at else None,
        retry_early=next_at is not None and next_at > now,
        referral=question.referral,
        outcomes=[(value, str(OUTCOME_WORDS[value])) for value in OUTCOMES],
        suggested=_suggested(current),
        sms_blocker=sms_blocker,
        sms=[_sms_view(session, m) for m in messages],
        sms_earlier=SMS_SHOWN if earlier_sms else None,
        sms_live=sms_live,
        max_sms_parts=MAX_SMS_PARTS,
        siblings=[SiblingView(id=other.id, received=local_time(other.created_at),
                              topic=topic_title(other.topic))
                  for other in held_siblings(session, question, account.id, MAX_ALSO)]
        if holder and question.status != QUESTION_CLOSED else [],
    )


def panel(session: Session, question: Question, account: Account) -> dict[str, Any]:
    """What templates/callback_panel.html needs, for the question's page."""
    return {"callback": build_panel(session, question, account, utcnow())}


# How long a question's page may poll its callback panel (during a call; while an SMS is on
# its way, up to an hour) on the opening it logged.
PANEL_POLL_WINDOW = timedelta(hours=2)


@bp.get("/questions/<int:question_id>/callback-panel")
@auth.role_required(ROLE_CONSULTANT, ROLE_COORDINATOR)
@retry_conflicts
def callback_panel(question_id: int) -> ResponseReturnValue:
    """The panel alone: htmx polls it for the call's and the SMS' statuses (hx-select).

    The holder's page polls it during a call, so then it touches their claim: they are
    working on the question (touch_claim changes nothing for anyone else). Not otherwise: the
    page also polls while a sent SMS has no final status (a resident's phone switched off:
    up to an hour), and a consultant who walked away from the page must not keep the question,
    and the resident's other questions, from their colleagues all that time.
    """
    account = auth.current_account()
    now = utcnow()
    with unit_of_work(runtime().sessions) as db:
        if store.live_attempt(db, question_id, now) is not None:
            touch_claim(db, question_id, account.id, now)
        question = db.get(Question, question_id)
        if question is None:
            abort(404)
        # It shows the resident's SMS: an opening of the question. Polled by the question's
        # page (htmx), whose opening is in the log already, it writes one only if this user
        # has none for the question in PANEL_POLL_WINDOW (a page left open an hour must not
        # write one every 10 minutes; a client's own HX-Request header must not read the
        # SMS unrecorded).
        polled = bool(request.headers.get("HX-Request"))
        record_once(db, account.id, audit.OPENED, question_id, now,
                    PANEL_POLL_WINDOW if polled else AUDIT_REPEAT_WINDOW, ip=client_address())
        context = panel(db, question, account)
        return render_template("callback_panel.html", **context)


# -- consultants' forms -----------------------------------------------------------------------

def _refuse(status: int, title: str, message: str, question_id: int) -> ResponseReturnValue:
    """A refusal page, with what the consultant wrote in the refused form to copy (an SMS or a
    referral refused because the claim lapsed meanwhile is not lost)."""
    return render_template("message.html", title=title, message=message,
                           draft=auth.written_draft(),
                           back=url_for("workspace.question", question_id=question_id)), status


def _refuse_sms(message: str, question_id: int, body: str, *,
                can_send: bool) -> ResponseReturnValue:
    """Refuse an SMS answer without losing what the consultant wrote: the page shows it again,
    in the form to shorten and send (can_send), or to copy where it cannot be sent."""
    action = url_for("workspace.sms_answer", question_id=question_id) if can_send else None
    return render_template("message.html", title=_("Please try again") if can_send else
                           _("No SMS"), message=message, draft=body, draft_action=action,
                           max_sms_parts=MAX_SMS_PARTS,
                           back=url_for("workspace.question", question_id=question_id)), 400


def _open_elsewhere(db: Session, caller_id: int | None, question_ids: list[int]) -> bool:
    """Whether the resident has an open question besides these (one that will be called)."""
    if caller_id is None:
        return False
    return db.scalar(select(Question.id).where(
        Question.caller_id == caller_id, Question.status != QUESTION_CLOSED,
        Question.id.not_in(question_ids)).limit(1)) is not None


def _held(db: Session, question_id: int, user_id: int, now: datetime) -> Question:
    """The question if the user holds it (the claim is touched, its row locked); else 409."""
    held = touch_claim(db, question_id, user_id, now)
    question = db.get(Question, question_id)
    if question is None:
        abort(404)
    if held:
        return question
    if question.status == QUESTION_CLOSED:
        message = _("Question %(id)s is closed already.", id=question_id)
    elif question.status == QUESTION_CLAIMED and question.claimed_by is not None:
        message = _("Question %(id)s is being handled by %(name)s.", id=question_id,
                    name=question.claimed_by.name)
    else:
        message = _("You do not hold question %(id)s. Claim it in the queue first.",
                    id=question_id)
    abort(make_response(_refuse(409, _("Not your question"), message, question_id)))


def _back(question_id: int, anchor: str) -> ResponseReturnValue:
    return redirect(url_for("workspace.question", question_id=question_id) + anchor, 303)


def _rest_error(exc: Exception) -> str:
    if isinstance(exc, TwilioRestException):
        # The client puts "Unable to create record: " before Twilio's own message.
        message = str(exc.msg).removeprefix(TWILIO_CLIENT_PREFIX)
        return f"{message} (Twilio error {exc.code})" if exc.code else message
    if isinstance(exc, TwilioServiceException):
        return str(exc.detail or exc.title)
    return f"{ERROR_UNREACHABLE} ({type(exc).__name__})"


def calling_clock() -> datetime:
    """The time the calling-hours check reads: its own, so that tests can set the hour of day
    without moving the claims' clock (utcnow)."""
    return utcnow()


def outside_calling_hours(settings: Settings) -> dict[str, str] | None:
    """The calling hours and the time now, when it is outside them (DESIGN.md: residents,
    many of them elderly, are called in the configured daytime hours only); None within."""
    clock = calling_clock()
    if store.within_hours(clock, settings.callback_hours, LOCAL_TIME):
        return None
    start, end = settings.callback_hours
    return {"start": f"{start:02d}", "end": f"{end:02d}",
            "now": clock.astimezone(LOCAL_TIME).strftime("%H:%M")}


def _outside_calling_hours(settings: Settings) -> str | None:
    """Why the Call button does not work now; None within the calling hours."""
    hours = outside_calling_hours(settings)
    if hours is None:
        return None
    return str(_("Residents are called from %(start)s:00 to %(end)s:00, Almaty time; it is "
                 "%(now)s now. The question stays in the queue: call in the morning.",
                 **hours))


@bp.post("/questions/<int:question_id>/call")
@auth.role_required(ROLE_CONSULTANT, ROLE_COORDINATOR)
def call_back(question_id: int) -> ResponseReturnValue:
    """Have Twilio call the consultant's phone, then bridge to the resident.

    Each of its two transactions runs again on a conflict (retry_conflicts), not the whole
    form: the request to Twilio between them is made once."""
    account = auth.current_account()
    settings = runtime().settings
    started = _start_attempt(question_id, account.id, settings)
    if not isinstance(started, _Started):
        return started
    early = started.early
    error, call_sid, call_status = _dial_consultant(settings, started.attempt_id,
                                                    started.consultant_phone)
    try:
        _store_dial(started.attempt_id, error, call_sid, call_status)
    except DBAPIError as aborted:
        if not is_conflict(aborted):
            raise
        # Twilio was asked, and the attempt is stored: not the busy page's "nothing was
        # saved, send it again" (a second call). Twilio's callbacks bring the CallSid
        # (_same_call); a refused call's attempt ends when it has gone quiet (live_attempt).
        log.warning("callback attempt %s: Twilio's answer could not be stored (%s)",
                    started.attempt_id, getattr(aborted.orig, "sqlstate", "?"))
    if error is not None:
        # Twilio's own words (English) show under the call's status on the panel.
        flash(_("The call was not made: %(reason)s", reason=_error_words(error)[0]), "error")
    else:
        flash(_("The hotline is calling your phone now. Answer it to be connected to the "
                "resident."), "notice")
        if early is not None:
            flash(_("The next try was planned for %(time)s (Almaty); you are calling earlier.",
                    time=local_time(early)), "warning")
    return _back(question_id, "#callback-panel")


@dataclass(frozen=True)
class _Started:
    """A callback attempt started (_start_attempt)."""

    attempt_id: int
    consultant_phone: str
    early: datetime | None  # the planned retry the call comes before


@retry_conflicts
def _start_attempt(question_id: int, user_id: int,
                   settings: Settings) -> _Started | ResponseReturnValue:
    """Start a callback attempt on the question the user holds, or the page that refuses
    it."""
    now = utcnow()
    with unit_of_work(runtime().sessions) as db:
        # Its earlier attempts before the question (start_attempt ends one gone quiet): the
        # order of Twilio's status callbacks, as in _held_together.
        store.lock_attempts(db, [question_id])
        question = _held(db, question_id, user_id, now)
        outside = _outside_calling_hours(settings)
        if outside is not None:
            return _refuse(409, _("Outside calling hours"), outside, question_id)
        user = db.get(User, user_id)
        if user is None or not user.phone:
            return _refuse(400, _("No phone number"), str(NO_OWN_PHONE), question_id)
        if question.caller is None:
            return _refuse(400, _("No phone number"),
                           _("No phone number is known for this resident."), question_id)
        if store.live_attempt(db, question_id, now) is not None:
            return _refuse(409, _("Call in progress"), _(
                "A call for this question is in progress already."), question_id)
        early = question.next_callback_at if (question.next_callback_at
                                              and question.next_callback_at > now) else None
        attempt = store.start_attempt(db, question, user_id, now)
        audit.record(db, user_id, audit.CALLED, question_id, ip=request.remote_addr,
                     attempt_id=attempt.id, retry_planned_for=early.isoformat() if early else None)
        return _Started(attempt.id, user.phone, early)


@retry_conflicts
def _store_dial(attempt_id: int, error: str | None, call_sid: str | None,
                call_status: str | None) -> None:
    """Store what Twilio answered to the request for the call."""
    with unit_of_work(runtime().sessions) as db:
        attempt = db.get(CallbackAttempt, attempt_id, with_for_update=True)
        assert attempt is not None
        if error is not None:
            store.fail_attempt(attempt, error, utcnow())
        elif call_sid is not None:
            store.dialled(db, attempt, call_sid, call_status, utcnow())


def _dial_consultant(settings: Settings, attempt_id: int,
                     consultant_phone: str) -> tuple[str | None, str | None, str | None]:
    """Ask Twilio to call the consultant; return (error, CallSid, status)."""
    client = make_twilio_client(settings)
    try:
        call = client.calls.create(
            to=consultant_phone,
            from_=settings.twilio_phone_number,
            url=external_url("callback_hooks.answer", attempt_id=attempt_id),
            method="POST",
            status_callback=external_url("callback_hooks.consultant_status",
                                         attempt_id=attempt_id),
            status_callback_event=CALL_EVENTS,
            status_callback_method="POST",
            timeout=CONSULTANT_RING_SECONDS,
            machine_detection="Enable",
        )
    except (TwilioRestException, TwilioServiceException, requests.RequestException) as exc:
        # Not Twilio's text in the log: it can carry a phone number.
        log.warning("callback attempt %s: Twilio refused the call (%s)", attempt_id,
                    type(exc).__name__)
        return _rest_error(exc), None, None
    finally:
        close_twilio_client(client)
    if not call.sid or not CALL_SID.fullmatch(str(call.sid)):
        return f"{ERROR_NO_CALL_ID} ({call.sid!r})", None, None
    return None, str(call.sid), str(call.status) if call.status else None


def _policy(settings: Settings) -> store.RetryPolicy:
    return store.RetryPolicy(
        hours=settings.callback_hours,
        delays=tuple(timedelta(minutes=m) for m in settings.callback_retry_minutes),
        max_attempts=settings.callback_attempts, zone=LOCAL_TIME)


def queue_gave_up_sms(db: Session, gave_up: Question, question_id: int, user_id: int,
                      now: datetime) -> tuple[int | None, str | None]:
    """Queue the SMS after the last failed attempt (gave_up's, about question_id) to the
    resident, in their language, written in the audit log; send it with enqueue_sms after the
    commit. (message id, None), or (None, why none can go: no_phone, landline, opted_out)."""
    caller = gave_up.caller
    if caller is None:
        return None, "no_phone"
    if not can_take_sms(caller.phone):
        return None, "landline"
    if sms_opted_out(db, caller, runtime().pseudonym_key):
        return None, "opted_out"
    language, text = _final_sms_text(gave_up, runtime().settings)
    parts = segments(text)
    message = queue_outbound(db, phone=caller.phone, body=text, language=language,
                             caller=caller, question_id=question_id, encoding=parts.encoding,
                             segments=parts.parts, now=now, purpose=SMS_GAVE_UP)
    audit.record(db, user_id, audit.SMS_SENT, question_id, ip=request.remote_addr,
                 message_id=message.id, automatic=True, segments=parts.parts)
    return message.id, None


def send_owed_gave_up_sms(db: Session, closed: Question, user_id: int,
                          now: datetime) -> int | None:
    """A question of the resident was closed without a conversation (a quick close) and none
    stays open: the "we tried to call you" SMS held back for it at another question's last
    failed try (storage.callbacks.gave_up_sms_owed) is queued now; its message id, to send
    with enqueue_sms after the commit (None: nothing owed, or it cannot be sent)."""
    owed = store.gave_up_sms_owed(db, closed)
    if owed is None:
        return None
    return queue_gave_up_sms(db, owed, owed.id, user_id, now)[0]


def _final_sms_text(question: Question, settings: Settings) -> tuple[str, str]:
    """The SMS after the last failed attempt, in the resident's language; (language, text)."""
    rt = runtime()
    language = resident_language(rt, question)
    text = rt.flow.content.text(language, "sms.callback_failed")
    text = text.replace("{attempts}", str(question.callback_attempts))
    return language, text.replace("{number}", settings.twilio_phone_number).strip()


# At most this many of the resident's other questions get the same outcome in one form.
MAX_ALSO = 20


def _also_ids(question_id: int) -> list[int] | None:
    """The other questions ticked on the outcome form ("also"), or None if malformed (the form
    lists at most MAX_ALSO)."""
    values = request.form.getlist("also")
    if len(values) > MAX_ALSO or not all(re.fullmatch(r"[0-9]{1,12}", v) for v in values):
        return None
    return sorted({int(v) for v in values} - {question_id})


def _held_together(db: Session, question_id: int, also: list[int], user_id: int,
                   now: datetime) -> tuple[Question, list[Question]]:
    """The question and the ticked others, all held by the user and all the same resident's;
    else 409 and nothing is written.

    Locked as claims and Twilio's status callbacks lock: the resident's row first, then the
    questions' callback attempts, then the questions in the order of their ids; so this form,
    a claim on the resident and a call's status arriving at the same moment wait for each
    other instead of deadlocking."""
    lock_resident_of(db, question_id)
    ids = sorted({question_id, *also})
    store.lock_attempts(db, ids)
    held = {qid: _held(db, qid, user_id, now) for qid in ids}
    question = held[question_id]
    others = [held[qid] for qid in also]
    for other in others:
        if question.caller_id is None or other.caller_id != question.caller_id:
            abort(make_response(_refuse(409, _("Not your question"), _(
                "Question %(other)s is not from the same resident as question %(id)s.",
                other=other.id, id=question_id), question_id)))
    return question, others


def _record_outcome(db: Session, question: Question, user_id: int, chosen: str,
                    referral: str | None, now: datetime, settings: Settings,
                    with_question: int | None, own_phone: bool) -> store.OutcomeResult:
    """Apply the outcome to one question and write it to the audit log (own_phone: the user
    said they called from their own phone)."""
    # A referral written with another outcome (resolved: "I sent them to the ЦОН") is kept
    # too, not dropped without a word; only follow-up needs one.
    result = store.apply_outcome(db, question, user_id, chosen, referral, now,
                                 _policy(settings))
    detail: dict[str, Any] = {"outcome": chosen, "attempt_id": result.attempt_id,
                              "failed_attempts": result.failed_attempts}
    if referral is not None:
        detail["referral"] = referral
    if result.next_callback_at is not None:
        detail["next_callback_at"] = result.next_callback_at.isoformat()
    if with_question is not None:
        detail["with_question"] = with_question
    if own_phone:
        detail["own_phone"] = True
    audit.record(db, user_id, audit.OUTCOME, question.id, ip=request.remote_addr, **detail)
    if result.closed:
        audit.record(db, user_id, audit.CLOSED, question.id, ip=request.remote_addr,
                     reason=result.close_reason)
    return result


@bp.post("/questions/<int:question_id>/outcome")
@auth.role_required(ROLE_CONSULTANT, ROLE_COORDINATOR)
@retry_conflicts
def outcome(question_id: int) -> ResponseReturnValue:
    """Record what came of the call (holder only); back to the queue with a notice.

    The form may tick the resident's other questions the user holds ("also"): one call answers
    them together, so each gets the same outcome (a no answer counts against each). The final
    SMS after the last failed attempt goes once, and only when none of the questions has a try
    left: a resident who will be called again is not told that we gave up.
    """
    account = auth.current_account()
    settings = runtime().settings
    chosen = request.form.get("outcome", "")
    # No NUL: PostgreSQL refuses it in text (a 500).
    referral = request.form.get("referral", "").replace("\x00", "").strip()[
        :MAX_REFERRAL_CHARS] or None
    also = _also_ids(question_id)
    if chosen not in OUTCOMES:
        return _refuse(400, _("Please try again"),
                       _("Please choose what came of the call."), question_id)
    if also is None:
        return _refuse(400, _("Please try again"), _(
            "The list of the resident's other questions was not understood. Please open the "
            "question again and save the outcome."), question_id)
    if chosen == OUTCOME_FOLLOW_UP and referral is None:
        return _refuse(400, _("Please try again"), _(
            "Please write which organisation the resident was referred to."), question_id)
    now = utcnow()
    sms_id: int | None = None
    sms_refused: str | None = None
    own_phone = request.form.get("own_phone") == "1"
    if chosen == OUTCOME_RESOLVED and not own_phone:
        with unit_of_work(runtime().sessions, read_only=True) as db:
            undelivered = store.failed_sms_answer(db, question_id) is not None
        if undelivered:
            # Twilio refused the answer (often within seconds of sending it, before the
            # lawyer clicks Resolved): closed now, the resident would be left with nothing.
            return _refuse(409, _("Please try again"), _(
                "Your SMS answer did not reach the resident (see its status on the "
                "question's page), so the question cannot be written as resolved yet. Send "
                "it again or call them; if you reached them by your own phone, tick \"I "
                "called from my own phone\"."), question_id)
    if chosen in (OUTCOME_NO_ANSWER, OUTCOME_WRONG_NUMBER):
        with unit_of_work(runtime().sessions, read_only=True) as db:
            call = store.own_open_attempt(db, question_id, account.id)
            live = call is not None and store.is_live(call, now)
            ringing = live and call is not None and call.state == CALLBACK_BRIDGING
            talking = live and call is not None and call.state == CALLBACK_CONNECTED
        if ringing:
            # The resident may still pick up (an elderly resident takes a while): a no answer
            # written now would release the question, or close it and send the "we could not
            # reach you" SMS, during the conversation.
            return _refuse(409, _("Please try again"), _(
                "The resident's phone is still ringing: wait until the call ends (the hotline "
                "stops ringing after %(seconds)s seconds), then write what came of it.",
                seconds=RESIDENT_RING_SECONDS), question_id)
        if talking and chosen == OUTCOME_NO_ANSWER:
            # A form written before the call, or a slip: the resident is on the line.
            return _refuse(409, _("Please try again"), _(
                "The resident answered this call and you are still connected: it cannot be "
                "written as no answer. Write what came of the conversation once it ends."),
                question_id)
        # Both say a call was made: a failed try counts towards giving up, and the last one
        # tells the resident by SMS that a lawyer called them; a wrong number closes the
        # question unasked (the quick close asks first). Only a call that rang the resident
        # counts: the hotline's, or one the lawyer says they made from their own phone.
        if not own_phone and not store.rang_resident(call):
            return _refuse(409, _("Please try again"), _(
                "The hotline has not rung the resident since the last outcome (the call did "
                "not reach their phone, or there was none), so this cannot be written as no "
                "answer or a wrong number. Call them first; if you called from your own "
                "phone, tick \"I called from my own phone\". A question to close without a "
                "call is closed under \"Close without a conversation\"."), question_id)
    with unit_of_work(runtime().sessions) as db:
        question, others = _held_together(db, question_id, also, account.id, now)
        result = _record_outcome(db, question, account.id, chosen, referral, now, settings,
                                 None, own_phone)
        rest = [_record_outcome(db, other, account.id, chosen, referral, now, settings,
                                question_id, own_phone) for other in others]
        gave_up = [q for q, r in zip([question, *others], [result, *rest], strict=True)
                   if r.gave_up]
        # (_held_together locked the resident first: a quick close of their other question
        # at the same moment waits, and sees this one closed: store.gave_up_sms_owed.)
        if gave_up and (len(gave_up) < 1 + len(others) or _open_elsewhere(
                db, question.caller_id, [question.id, *(other.id for other in others)])):
            # Another question of the resident will still be called: not "we gave up".
            sms_refused = "retry_left"
        elif gave_up:
            sms_id, sms_refused = queue_gave_up_sms(db, gave_up[0], question_id, account.id,
                                                    now)
    enqueue_sms(sms_id)
    flash(_outcome_notice(question_id, result, settings, sms_refused), "notice")
    if others:
        flash(_("The same outcome was written for the resident's other questions: "
                "%(ids)s.", ids=id_list([other.id for other in others])), "notice")
        gave_up_too = [q.id for q in gave_up if q.id != question_id]
        if gave_up_too and not result.gave_up:
            flash(_("No answer after the last try: question(s) %(ids)s closed too.",
                    ids=id_list(gave_up_too)), "notice")
    return redirect(url_for("workspace.queue"), 303)


# Question numbers a message names, at most: a flashed message lives in the session cookie
# until the next page, and a cookie holds 4 KB (a resident with a hundred questions made one
# message too long for it, and the outcome a server error).
IDS_SHOWN = 10


def id_list(ids: list[int]) -> str:
    """Question numbers for a message: "3, 5, 8", or the first IDS_SHOWN "and N more"."""
    shown = ", ".join(map(str, ids[:IDS_SHOWN]))
    if len(ids) <= IDS_SHOWN:
        return shown
    return str(_("%(ids)s and %(count)s more", ids=shown, count=len(ids) - IDS_SHOWN))


def _outcome_notice(question_id: int, result: store.OutcomeResult, settings: Settings,
                    sms_refused: str | None) -> str:
    if result.close_reason == CLOSE_RESOLVED:
        return str(_("Question %(id)s is closed: resolved.", id=question_id))
    if result.close_reason == CLOSE_WRONG_NUMBER:
        return str(_("Question %(id)s is closed: wrong number.", id=question_id))
    if result.close_reason == CLOSE_NO_ANSWER:
        if sms_refused == "opted_out":
            return str(_("No answer after %(n)s attempts: question %(id)s is closed. The "
                         "resident has opted out of SMS, so no SMS was sent.",
                         n=result.failed_attempts, id=question_id))
        if sms_refused == "no_phone":
            return str(_("No answer after %(n)s attempts: question %(id)s is closed. No SMS "
                         "was sent: the resident's number is not known.",
                         n=result.failed_attempts, id=question_id))
        if sms_refused == "landline":
            return str(_("No answer after %(n)s attempts: question %(id)s is closed. No SMS "
                         "was sent: the resident's number is a landline, which cannot receive "
                         "SMS.", n=result.failed_attempts, id=question_id))
        if sms_refused == "retry_left":
            return str(_("No answer after %(n)s attempts: question %(id)s is closed. No SMS "
                         "was sent: the resident's other question will be tried again.",
                         n=result.failed_attempts, id=question_id))
        return str(_("No answer after %(n)s attempts: question %(id)s is closed and the "
                     "resident gets an SMS saying how to reach us.",
                     n=result.failed_attempts, id=question_id))
    if result.outcome == OUTCOME_NO_ANSWER and result.next_callback_at is not None:
        return str(_("No answer (attempt %(n)s of %(max)s). Question %(id)s is back in the "
                     "queue; next try after %(time)s (Almaty).", n=result.failed_attempts,
                     max=settings.callback_attempts, id=question_id,
                     time=local_time(result.next_callback_at)))
    return str(_("Question %(id)s is back in the queue with the referral noted.",
                  id=question_id))


def enqueue_sms(message_id: int | None) -> None:
    """Hand a queued SMS to the jobs (None: nothing to send). After the commit, so the worker
    finds the row; if the queue is down the sweep sends it."""
    if message_id is None:
        return
    try:
        jobs.send_sms_job(message_id)
    except Exception:  # noqa: BLE001 - any queue failure; the sweep recovers
        log.exception("could not enqueue SMS %s", message_id)


def _sent_just_now(db: Session, question_id: int, user_id: int, body: str,
                   now: datetime) -> bool:
    """Whether the user sent this very text to this question less than a minute ago."""
    return db.scalar(
        select(SmsMessage.id).where(
            SmsMessage.question_id == question_id, SmsMessage.sent_by_id == user_id,
            SmsMessage.direction != SMS_IN, SmsMessage.body == body,
            SmsMessage.created_at > now - DUPLICATE_SMS_WINDOW)
        .limit(1)) is not None


@bp.post("/questions/<int:question_id>/sms")
@auth.role_required(ROLE_CONSULTANT, ROLE_COORDINATOR)
@retry_conflicts
def sms_answer(question_id: int) -> ResponseReturnValue:
    """Answer the resident by SMS (holder only); its delivery status shows on the panel."""
    account = auth.current_account()
    body = request.form.get("body", "").replace("\x00", "").strip()
    if not body:
        return _refuse(400, _("Please try again"), _("Please write the SMS."), question_id)
    parts = segments(body)
    if parts.parts > MAX_SMS_PARTS:
        return _refuse_sms(_(
            "This SMS would take %(parts)s parts; at most %(max)s are allowed. Please shorten "
            "it.", parts=parts.parts, max=MAX_SMS_PARTS), question_id, body, can_send=True)
    now = utcnow()
    with unit_of_work(runtime().sessions) as db:
        question = _held(db, question_id, account.id, now)
        caller = question.caller
        if caller is None:
            return _refuse_sms(_("No phone number is known for this resident."), question_id,
                               body, can_send=False)
        if not can_take_sms(caller.phone):
            return _refuse_sms(str(LANDLINE), question_id, body, can_send=False)
        if sms_opted_out(db, caller, runtime().pseudonym_key):
            return _refuse_sms(_(
                "The resident has opted out of SMS (STOP): no SMS can be sent to them. Please "
                "call them instead."), question_id, body, can_send=False)
        # The question's row is locked (touch_claim): a second copy of the form waits here
        # for the first to commit, then finds its message.
        if _sent_just_now(db, question_id, account.id, body, now):
            flash(_("This SMS was sent a moment ago already; it was not sent again."),
                  "warning")
            return _back(question_id, "#sms-answer")
        message = queue_outbound(db, phone=caller.phone, body=body,
                                 language=question.language or caller.language, caller=caller,
                                 question_id=question_id, encoding=parts.encoding,
                                 segments=parts.parts, now=now)
        message.sent_by_id = account.id
        audit.record(db, account.id, audit.SMS_SENT, question_id, ip=request.remote_addr,
                     message_id=message.id, segments=parts.parts, encoding=parts.encoding)
        message_id = message.id
    enqueue_sms(message_id)
    flash(_("Your SMS is on its way; its delivery status shows below."), "notice")
    return _back(question_id, "#sms-answer")


# -- Twilio's webhooks for the bridged call ---------------------------------------------------

def _twiml(response: VoiceResponse) -> Response:
    return Response(str(response), mimetype=TWIML)


def _hang_up(say: str | None = None) -> Response:
    response = VoiceResponse()
    if say:
        response.say(say, language="ru-RU", voice=twilio_runtime().settings.russian_voice)
    response.hangup()
    return _twiml(response)


def _locked_attempt(db: Session, attempt_id: int) -> CallbackAttempt | None:
    # Locked, so two callbacks for one attempt at once apply one after the other.
    return db.scalars(select(CallbackAttempt).where(CallbackAttempt.id == attempt_id)
                      .with_for_update()).one_or_none()


def _same_call(attempt: CallbackAttempt, call_sid: str) -> bool:
    """Whether call_sid is the attempt's call to the consultant (first seen: it becomes it)."""
    if attempt.consultant_call_sid is None:
        # A callback that came before the REST answer was stored; unless the call is another
        # attempt's (the column is unique: taking it would be a 500).
        session = object_session(attempt)
        if session is not None and session.scalar(
                select(CallbackAttempt.id).where(CallbackAttempt.consultant_call_sid == call_sid)
                .limit(1)) is not None:
            return False
        attempt.consultant_call_sid = call_sid
        return True
    return attempt.consultant_call_sid == call_sid


def _call_status(name: str) -> str:
    value = request.form.get(name, "").strip().lower()
    if not CALL_STATUS.fullmatch(value):
        abort(400, description=f"{name} is missing or malformed")
    return value


@hooks.post("/<int:attempt_id>/answer")
@twilio_webhook
@retry_conflicts
def answer(attempt_id: int) -> Response:
    """The consultant answered: tell them, and dial the resident with the hotline's number."""
    call_sid = form_sid("CallSid", CALL_SID)
    answered_by = request.form.get("AnsweredBy", "").strip().lower()
    rt = twilio_runtime()
    settings = rt.settings
    now = utcnow()
    with unit_of_work(rt.sessions) as db:
        attempt = _locked_attempt(db, attempt_id)
        if attempt is None or not _same_call(attempt, call_sid):
            log.warning("answer for unknown callback attempt %s ignored", attempt_id)
            return _hang_up()
        question = db.get(Question, attempt.question_id)
        if question is not None and (question.status != QUESTION_CLAIMED
                                     or question.claimed_by_id != attempt.consultant_id):
            # Released or closed since "Call" was pressed (or gone to someone else).
            log.info("callback attempt %s: the question is no longer the consultant's",
                     attempt_id)
            if attempt.state in store.LIVE_STATES:
                store.end_attempt(attempt, store.ERROR_WITHDRAWN, now)
            return _hang_up(SAY_NOT_YOURS.format(id=question.id))
        if not store.is_live(attempt, now):
            return _hang_up(SAY_OVER)
        if answered_by in MACHINE_ANSWERS:
            log.info("callback attempt %s: a machine answered the consultant's phone",
                     attempt_id)
            store.record_leg_status(attempt, store.CONSULTANT_LEG, "in-progress", now)
            store.end_attempt(attempt, ERROR_MACHINE, now)
            return _hang_up()
        resident = question.caller.phone if question and question.caller else None
        if question is None or resident is None:
            store.fail_attempt(attempt, ERROR_NO_RESIDENT_PHONE, now)
            return _hang_up(SAY_NO_PHONE)
        store.record_leg_status(attempt, store.CONSULTANT_LEG, "in-progress", now)
        store.resident_dialled(question, now)
        touch_claim(db, question.id, attempt.consultant_id, now)
        question_id = question.id
    response = VoiceResponse()
    response.say(SAY_CONNECTING.format(id=question_id), language="ru-RU",
                 voice=settings.russian_voice)
    dial = Dial(caller_id=settings.twilio_phone_number, answer_on_bridge=True,
                timeout=RESIDENT_RING_SECONDS, method="POST",
                action=external_url("callback_hooks.dialed", attempt_id=attempt_id))
    dial.number(resident, status_callback=external_url("callback_hooks.resident_status",
                                                       attempt_id=attempt_id),
                status_callback_event=" ".join(CALL_EVENTS), status_callback_method="POST")
    response.append(dial)
    return _twiml(response)


@hooks.post("/<int:attempt_id>/dialed")
@twilio_webhook
@retry_conflicts
def dialed(attempt_id: int) -> Response:
    """The Dial to the resident is over: record how it ended, tell the consultant, hang up."""
    call_sid = form_sid("CallSid", CALL_SID)
    status = _call_status("DialCallStatus")
    if status == "answered":
        status = "completed"
    child_sid = request.form.get("DialCallSid", "")
    duration = form_int("DialCallDuration")
    now = utcnow()
    with unit_of_work(twilio_runtime().sessions) as db:
        attempt = _locked_attempt(db, attempt_id)
        if attempt is None or not _same_call(attempt, call_sid):
            log.warning("dial action for unknown callback attempt %s ignored", attempt_id)
            return _hang_up()
        store.record_leg_status(attempt, store.RESIDENT_LEG, status, now,
                                call_sid=child_sid if CALL_SID.fullmatch(child_sid) else None,
                                duration=duration)
        touch_claim(db, attempt.question_id, attempt.consultant_id, now)
    return _hang_up(SAY_DIALED.get(status, SAY_DIAL_FAILED))


@retry_conflicts
def _leg_status(attempt_id: int, leg: str) -> Response:
    call_sid = form_sid("CallSid", CALL_SID)
    status = _call_status("CallStatus")
    duration = form_int("CallDuration")
    parent = request.form.get("ParentCallSid", "")
    now = utcnow()
    with unit_of_work(twilio_runtime().sessions) as db:
        attempt = _locked_attempt(db, attempt_id)
        if attempt is None:
            log.info("status %r for unknown callback attempt %s ignored", status, attempt_id)
            abort(404)
        if leg == store.CONSULTANT_LEG:
            known = _same_call(attempt, call_sid)
        else:
            known = (not parent or attempt.consultant_call_sid is None
                     or parent == attempt.consultant_call_sid)
            known = known and attempt.resident_call_sid in (None, call_sid)
        if not known:
            log.warning("status for another call on callback attempt %s ignored", attempt_id)
            return Response(status=204)
        changed = store.record_leg_status(
            attempt, leg, status, now, call_sid=call_sid if leg == store.RESIDENT_LEG else None,
            duration=duration if leg == store.RESIDENT_LEG else None)
        if changed:
            touch_claim(db, attempt.question_id, attempt.consultant_id, now)
    return Response(status=204)


@hooks.post("/<int:attempt_id>/status/consultant")
@twilio_webhook
def consultant_status(attempt_id: int) -> Response:
    """Twilio reports the call to the consultant's phone (initiated, ringing, answered...)."""
    return _leg_status(attempt_id, store.CONSULTANT_LEG)


@hooks.post("/<int:attempt_id>/status/resident")
@twilio_webhook
def resident_status(attempt_id: int) -> Response:
    """Twilio reports the dialled call to the resident."""
    return _leg_status(attempt_id, store.RESIDENT_LEG)
