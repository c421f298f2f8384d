"""Voice webhooks: Twilio posts here, the flow decides, TwiML answers."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from flask import Blueprint, Response, abort, request, send_from_directory
from werkzeug.exceptions import HTTPException

from flows.engine import (
    EMPTY,
    LANGUAGE,
    MAIN,
    OFFER,
    WAITING_CALLER,
    Prompt,
    Screen,
    UnknownNode,
)
from hotline import jobs
from hotline.recording_catchup import enabled as catch_up_enabled
from hotline.twilio_glue import (
    CALL_SID,
    RECORDING_SID,
    external_url,
    form_int,
    form_sid,
    runtime,
    twilio_webhook,
    url_origin,
)
from hotline.twiml import render_prompts_then, render_screen
from storage import calls, questions
from storage.db import retry_conflicts, unit_of_work
from storage.phones import normalise_phone

log = logging.getLogger(__name__)

bp = Blueprint("voice", __name__, url_prefix="/voice")

TWIML = "application/xml"
# How long Twilio may keep a prompt's audio fetched at its versioned URL (the URL changes
# when the file does): a week.
PROMPT_MAX_AGE = 7 * 24 * 3600
MAX_ERRORS = 1
# What a caller hears when even the apology fails (the content may be what is broken): the
# content's error.later in both languages, Kazakh first, read by the Russian voice as every
# Kazakh text without a recording is. A test keeps them equal to the content's.
LAST_RESORT = {
    "kk": "Кешіріңіз, желі қазір жұмыс істемей тұр. Кейінірек қайта қоңырау шалыңыз. Сау болыңыз.",
    "ru": "Извините, линия сейчас не работает. Пожалуйста, позвоните позже. До свидания.",
}
LAST_RESORT_TWIML = (
    '<?xml version="1.0" encoding="UTF-8"?><Response>'
    + "".join(f'<Say language="ru-RU">{text}</Say>' for text in LAST_RESORT.values())
    + "<Hangup/></Response>"
)


def _now() -> datetime:
    return datetime.now(UTC)


def _phone_field(name: str) -> str:
    # PostgreSQL refuses text with NUL characters (a 500, an apology to the caller).
    return request.form.get(name, "").replace("\x00", "")[:64]


def _language_arg() -> str | None:
    return runtime().flow.known_language(request.args.get("lang"))


def _tries_arg() -> int:
    value = request.args.get("tries", "0")
    return min(int(value), 9) if value.isascii() and value.isdigit() and len(value) < 3 else 0


def _waiting_caller(node: str | None = None) -> bool:
    """Whether this request's menu is one of a caller whose question waits (Flow.start gave
    the main menu, or the language menu, tries of WAITING_CALLER or more)."""
    return (node or request.args.get("node", MAIN)) in (MAIN, LANGUAGE) and (
        _tries_arg() >= WAITING_CALLER)


def _prompt_url(prompt: Prompt) -> str | None:
    path = runtime().prompts.file_for(prompt)
    if path is None:
        return None
    return external_url("voice.prompt_audio", language=prompt.language, name=path.name,
                        v=runtime().prompts.version(path))


def _twiml(body: str) -> Response:
    return Response(body, mimetype=TWIML)


def _errors_arg() -> int:
    value = request.args.get("err", "0")
    # ASCII only: str.isdigit() accepts "²", which int() refuses (in the apology handler too);
    # and short: int() refuses more than 4300 digits.
    short_number = value.isascii() and value.isdigit() and len(value) < 3
    return int(value) if short_number else MAX_ERRORS


def _render(screen: Screen, errors: int = 0) -> Response:
    """Render screen; errors > 0 (after an apology) rides along for the rest of the call, so a
    second failure ends it politely (error.later) instead of apologising again and again."""
    params = {"lang": screen.language, "topic": screen.topic, "err": errors or None}

    def render() -> str:
        return render_screen(
            screen,
            action_url=external_url("voice.menu", node=screen.node, tries=screen.tries,
                                    **params),
            # tries: the offer made after "nothing was recorded" (Flow.not_recorded).
            recorded_url=external_url("voice.recorded", tries=screen.tries or None, **params),
            recording_status_url=external_url("voice.recording_status", **params),
            audio_url=_prompt_url,
            settings=runtime().settings,
        )

    # The URLs are absolute: the same screen reached through another host name differs.
    return _twiml(runtime().documents.get((screen, errors, url_origin()), render))


@bp.post("/incoming")
@twilio_webhook
def incoming() -> Response:
    """Answer a new call: returning callers hear their language, new ones choose one."""
    call_sid = form_sid("CallSid", CALL_SID)
    rt = runtime()
    from_number = _phone_field("From")
    # Before the transaction: on SQLite it holds the database's one write lock.
    phone = normalise_phone(from_number, rt.settings.default_region)
    # Not durable (storage.db.unit_of_work): a power cut may lose this row, a crash of this
    # process may not; the caller's question, stored durably later, makes it durable too.
    try:
        caller = calls.answer_incoming_call(
            rt.webhook_engine, call_sid=call_sid, phone=phone, from_number=from_number,
            to_number=_phone_field("To"), now=_now())
    except Exception:  # noqa: BLE001 - see _bookkeeping_failed
        _bookkeeping_failed("the incoming call")
        caller = calls.IncomingCaller(None, False)
    # A returning caller whose question waits hears so first (Flow.start).
    return _render(rt.flow.start(caller.language, caller.waiting))


def _bookkeeping_failed(what: str) -> None:
    """Log that the call's own row could not be written (the database is down or locked).

    The menus and explainers are content, not data: the caller goes on through them instead
    of hearing an apology and being hung up on after the first key. What is lost is the
    bookkeeping (the call's keys for the reports, a language to remember); the caller's
    question, if they leave one, is stored with its own request (or by the recording
    catch-up), and its caller is found from the request's number then.
    """
    log.exception("could not record %s; the caller goes on without it", what)


@bp.post("/menu")
@twilio_webhook
def menu() -> Response:
    """Handle a key pressed (or silence) on a menu, and say what comes next."""
    call_sid = form_sid("CallSid", CALL_SID)
    # No NUL: PostgreSQL refuses it in text (the node and keys are stored).
    node = request.args.get("node", MAIN).replace("\x00", "")
    digits = request.form.get("Digits", "").replace("\x00", "")[:8]
    rt = runtime()
    try:
        screen = rt.flow.press(node, _language_arg(), digits, _tries_arg(),
                               request.args.get("topic"))
    except UnknownNode:
        # A URL from before a content change (or a forged one): back to the main menu.
        log.warning("unknown menu node %r", node[:64])
        screen = rt.flow.show(MAIN, _language_arg())
    # Not durable, as in incoming().
    try:
        calls.record_menu_step(rt.webhook_engine, call_sid, node, digits, _now(),
                               language=screen.remember_language)
    except Exception:  # noqa: BLE001 - see _bookkeeping_failed
        _bookkeeping_failed("a menu step")
    if screen.node == OFFER and not digits.strip() and node != EMPTY and _question_waits():
        # Silence to the end of a menu or an explainer ends in the offer to record, but this
        # caller's question already waits (left on an earlier call, or on this one before
        # they went back to the menus): say so, and goodbye, as Flow.start's waiting caller
        # hears on the main menu. Silence after "nothing was recorded" still gets its offer.
        screen = rt.flow.question_waits(screen.language)
    return _render(_for_this_caller(screen), errors=_errors_arg())


def _question_waits() -> bool:
    """Whether the caller's number has a question waiting for a lawyer (False when the number
    is hidden, or the database cannot say: the offer to record is the safe answer then)."""
    phone = normalise_phone(_phone_field("From"), runtime().settings.default_region)
    if phone is None:
        return False
    try:
        return calls.has_open_question(runtime().webhook_engine, phone)
    except Exception:  # noqa: BLE001 - the caller goes on to the offer rather than an apology
        log.exception("could not read whether the caller's question waits")
        return False


def _for_this_caller(screen: Screen) -> Screen:
    """screen, told first that no lawyer can call back if the caller's number is hidden and
    the screen is about to record (Flow.for_hidden_number; the number is looked at only then)."""
    if screen.wait != "record" or _callable_back():
        return screen
    return runtime().flow.for_hidden_number(screen)


def _callable_back() -> bool:
    """Whether the caller's number (From) is one a lawyer can call back."""
    return normalise_phone(_phone_field("From"), runtime().settings.default_region) is not None


@bp.post("/show")
@twilio_webhook
def show() -> Response:
    """Show a node without a key press (where a caller lands after an apology)."""
    form_sid("CallSid", CALL_SID)
    node = request.args.get("node", MAIN)
    # A caller whose question waits keeps that (WAITING_CALLER): silence on the menu the
    # apology led back to still ends with "your question waits", not an offer to record again.
    tries = WAITING_CALLER if _waiting_caller(node) else 0
    try:
        screen = runtime().flow.show(node, _language_arg(), tries)
    except UnknownNode:
        screen = runtime().flow.show(MAIN, _language_arg(), tries)
    # Keep the error count: if the next step fails too, the caller is told to call back later
    # instead of going round apology -> menu -> apology.
    return _render(_for_this_caller(screen), errors=_errors_arg())


@retry_conflicts
def _store_question() -> tuple[int, bool] | None:
    """Create (once) the question for the recording in this request.

    Return its recording id and whether the question has a caller's number to call back
    (None when the request carries no recording)."""
    call_sid = form_sid("CallSid", CALL_SID)
    if not request.form.get("RecordingSid") and not request.form.get("RecordingUrl"):
        return None
    recording_sid = form_sid("RecordingSid", RECORDING_SID)
    url = request.form.get("RecordingUrl", "").replace("\x00", "")[:2000]
    duration = _recording_seconds()
    if not url:
        abort(400, description="RecordingUrl is missing")
    topic = request.args.get("topic")
    if topic not in runtime().flow.content.topics:
        topic = None
    with unit_of_work(runtime().sessions) as session:
        question, recording, _created = questions.record_question(
            session, recording_sid=recording_sid, call_sid=call_sid, recording_url=url,
            duration=duration, language=_language_arg(), topic=topic, now=_now(),
            phone=normalise_phone(_phone_field("From"), runtime().settings.default_region),
            from_number=_phone_field("From"), to_number=_phone_field("To"),
            pseudonym_key=runtime().pseudonym_key,
        )
        recording_id = recording.id
        number_known = question.caller_id is not None
        pending = recording.download_state != "stored"
    if pending:
        # After the commit, so the worker finds the row; the job is idempotent. If the queue is
        # down the question is safe in the database and the sweep fetches it later: the caller
        # still hears the promise, not an apology.
        try:
            jobs.download_recording_job(recording_id)
        except Exception:  # noqa: BLE001 - any queue failure; the sweep recovers
            log.exception("could not enqueue the download of recording %s", recording_id)
    return recording_id, number_known


def _recording_seconds() -> int | None:
    """RecordingDuration, or None when it is not a count of seconds (Twilio's API shows -1 for
    a recording it is still processing). Only a number: the recording is kept all the same, not
    refused with a 400, which the caller would hear as Twilio's "application error" and lose
    the question."""
    value = request.form.get("RecordingDuration", "").strip()
    if value.isascii() and value.isdigit() and len(value) <= 9:
        return int(value)
    if value:
        log.warning("recording %s has no usable duration (%r); kept without one",
                    request.form.get("RecordingSid", "")[:64], value[:16])
    return None


@bp.post("/recorded")
@twilio_webhook
def recorded() -> Response:
    """After <Record>: keep the question and promise the callback, or say nothing was heard.

    If the question cannot be stored now (the database is down), the recording is still at
    Twilio: where the recording catch-up runs (hotline.recording_catchup) it will store it
    within minutes, so the caller hears the promise, not an apology that sends them to record
    the same question again (which the catch-up would then store a second time). Elsewhere
    (demo mode, no TWILIO_PHONE_NUMBER) the apology asks them to try again.
    """
    rt = runtime()
    language = _language_arg()
    errors = _errors_arg()
    empty = request.form.get("RecordingDuration", "").strip() in ("0",)
    try:
        stored = None if empty else _store_question()
    except HTTPException:
        raise
    except Exception:
        if not catch_up_enabled(rt):
            raise  # the apology
        log.exception("could not store recording %s; the recording catch-up will",
                      request.form.get("RecordingSid", "")[:64])
        return _render(rt.flow.recorded(language, _callable_back()), errors=errors)
    if stored is None:
        return _render(rt.flow.not_recorded(language, request.args.get("topic"), _tries_arg()),
                       errors=errors)
    _recording_id, number_known = stored
    return _render(rt.flow.recorded(language, number_known), errors=errors)


@bp.post("/recording-status")
@twilio_webhook
def recording_status() -> Response:
    """Twilio's recording status callback: store the question if the action has not yet."""
    status = request.form.get("RecordingStatus", "completed")
    empty = request.form.get("RecordingDuration", "").strip() == "0"
    if status == "completed" and not empty:
        try:
            _store_question()
        except HTTPException:
            raise
        except Exception:  # noqa: BLE001 - the database is down, say: the question is not stored
            # Not the spoken apology (a 200 nobody hears): a 5xx, so that Twilio sends this
            # callback again, which is then the only copy of a question the action lost.
            log.exception("could not store recording %s", request.form.get("RecordingSid"))
            return Response(status=503)
    else:
        log.warning("recording %s ended with status %s", request.form.get("RecordingSid"), status)
    return Response(status=204)


@bp.post("/status")
@twilio_webhook
@retry_conflicts
def call_status() -> Response:
    """Record a call's status change (completed, busy, no-answer, ...)."""
    call_sid = form_sid("CallSid", CALL_SID)
    status = request.form.get("CallStatus", "")[:20]
    if not status:
        abort(400, description="CallStatus is missing")
    with unit_of_work(runtime().sessions) as session:
        calls.update_call_status(
            session, call_sid=call_sid, status=status, now=_now(),
            duration=form_int("CallDuration"), from_number=_phone_field("From"),
            to_number=_phone_field("To"), region=runtime().settings.default_region,
        )
    return Response(status=204)


@bp.get("/prompts/<language>/<name>")
def prompt_audio(language: str, name: str) -> Response:
    """Serve a prompt's audio file to Twilio's <Play> (prompts are public, recordings are not)."""
    if language not in runtime().flow.content.language_codes or not name.endswith(".wav"):
        abort(404)
    folder = runtime().settings.prompts_dir / language
    response = send_from_directory(folder, name, mimetype="audio/wav")
    # send_from_directory refused anything outside the folder (404) before this line.
    version = request.args.get("v")
    if version and version == runtime().prompts.version(folder / name):
        # The URL names these exact bytes: Twilio's media cache (and a browser's) keeps them,
        # and a menu's <Play>s start without a request to this server each time.
        response.cache_control.no_cache = None
        response.cache_control.public = True
        response.cache_control.max_age = PROMPT_MAX_AGE
    return response


@bp.errorhandler(Exception)
def apologise(error: Exception) -> Response | HTTPException:
    """Turn any failure inside a voice handler into a spoken apology and a way on."""
    if isinstance(error, HTTPException):
        return error
    log.exception("voice webhook failed: %s", request.path)
    try:
        rt = runtime()
        language = _language_arg()
        errors = _errors_arg()
        if errors >= MAX_ERRORS:
            prompts = rt.flow.say(language, "error.later")
            redirect = None
        else:
            prompts = rt.flow.say(language, "error.apology")
            redirect = external_url("voice.show", node=MAIN, lang=language, err=errors + 1,
                                    tries=WAITING_CALLER if _waiting_caller() else None)
        body = render_prompts_then(prompts, redirect_url=redirect, audio_url=_prompt_url,
                                   settings=rt.settings)
    except Exception:  # noqa: BLE001 - the last line of defence must not fail
        log.exception("apology failed too")
        body = LAST_RESORT_TWIML
    return _twiml(body)
