"""A question's page: audio, transcript and correction, caller history, notes, tags, closing.

Who may change a question: the consultant or coordinator who holds its claim. Every change below
is a POST that first touches the user's claim (storage.claims.touch_claim, one conditional
UPDATE, which on PostgreSQL also locks the row until the change commits); a user who does not
hold the claim gets 409 and changes nothing. The page offers the Claim button first, and shows
the forms only to the holder. A closed question is read-only. Opening the page also touches the
holder's claim, so a consultant reading a long question does not lose it.

Audit (storage.audit): OPENED when the page is opened; LISTENED when the audio is fetched from
its start (a request without Range, or with a range from byte 0: a player starting; seeking asks
for later bytes). Both are written at most once per user and question within
AUDIT_REPEAT_WINDOW, since the redirect after each change re-opens the page, and players fetch
the start more than once. The player has preload="none": a browser fetches nothing before play
is pressed, so LISTENED means what the audit log says, that the user played the resident's
voice (with "metadata" every coordinator who opened a page read as having listened). Changes
write CHANGED (the names of the fields), NOTED, RELEASED and CLOSED (the reason) in the same
transaction as the change. Phone numbers are shown on the page (consultants call back) but
never written into events or logs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any

from flask import abort, redirect, render_template, request, send_file, url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy.orm import Session

from hotline import auth, callbacks, i18n
from hotline.auth import client_address
from hotline.workspace import (
    CHANNELS,
    bp,
    lapse_before,
    local_time,
    node_title,
    nothing_recognised,
    runtime,
    topic_title,
    transcription_words,
)
from storage import audit
from storage.callbacks import end_live_attempts, lock_attempts
from storage.claims import lock_resident_of, release_claim, resident_holders, touch_claim
from storage.db import retry_conflicts, unit_of_work
from storage.models import (
    CHANNEL_VOICE,
    CLOSE_ABUSIVE,
    CLOSE_NO_ANSWER,
    CLOSE_RESOLVED,
    CLOSE_SILENCE,
    CLOSE_TEST_CALL,
    CLOSE_WRONG_NUMBER,
    DOWNLOAD_FAILED,
    DOWNLOAD_REFUSED,
    DOWNLOAD_STORED,
    QUESTION_CLAIMED,
    QUESTION_CLOSED,
    QUESTION_WAITING,
    ROLE_CONSULTANT,
    ROLE_COORDINATOR,
    SMS_IN,
    SMS_OUT,
    TRANSCRIPTION_NO_MODEL,
    Question,
    utcnow,
)
from storage.question_page import (
    AUDIT_REPEAT_WINDOW,
    CORRECTED_MAX,
    NOTE_MAX,
    REGION_CODES,
    VILLAGE_MAX,
    InvalidChange,
    add_note,
    caller_history,
    correct_transcript,
    load_question,
    quick_close,
    record_once,
    set_tags,
)
from storage.retention import RECORDING_DELETED

log = logging.getLogger(__name__)

# Vosk gives each word a confidence between 0 and 1. Below this one the page marks the word:
# on telephone audio, words under 0.6 are wrong often enough to be checked against the audio,
# while marking more would drown the few real doubts.
LOW_CONFIDENCE = 0.6

STATUSES = {QUESTION_WAITING: _l("waiting"), QUESTION_CLAIMED: _l("claimed"),
            QUESTION_CLOSED: _l("closed")}
QUICK_CLOSE = {
    CLOSE_SILENCE: _l("Silence"),
    CLOSE_WRONG_NUMBER: _l("Wrong number"),
    CLOSE_TEST_CALL: _l("Test call"),
    CLOSE_ABUSIVE: _l("Abusive"),
}
CLOSE_REASONS = {**QUICK_CLOSE, CLOSE_RESOLVED: _l("Resolved"),
                 CLOSE_NO_ANSWER: _l("No answer")}
SMS_DIRECTIONS = {SMS_IN: _l("from the resident"), SMS_OUT: _l("to the resident")}
# Question.region codes (storage.question_page.REGION_CODES) and their names.
REGIONS = {
    "astana": _l("Astana (city)"),
    "almaty": _l("Almaty (city)"),
    "shymkent": _l("Shymkent (city)"),
    "abai": _l("Abai Region"),
    "akmola": _l("Akmola Region"),
    "aktobe": _l("Aktobe Region"),
    "almaty_region": _l("Almaty Region"),
    "atyrau": _l("Atyrau Region"),
    "east_kazakhstan": _l("East Kazakhstan Region"),
    "jambyl": _l("Jambyl Region"),
    "jetisu": _l("Jetisu Region"),
    "karaganda": _l("Karaganda Region"),
    "kostanay": _l("Kostanay Region"),
    "kyzylorda": _l("Kyzylorda Region"),
    "mangystau": _l("Mangystau Region"),
    "north_kazakhstan": _l("North Kazakhstan Region"),
    "pavlodar": _l("Pavlodar Region"),
    "turkistan": _l("Turkistan Region"),
    "ulytau": _l("Ulytau Region"),
    "west_kazakhstan": _l("West Kazakhstan Region"),
}
assert tuple(REGIONS) == REGION_CODES
# The three cities of national significance, first in every list of regions.
CITIES = ("astana", "almaty", "shymkent")
# Words naming the kind of place ("Акмолинская область", "область Абай", "Абай облысы",
# "город Астана"), not which: left out when ordering the names.
PLACE_KINDS = frozenset({"область", "облысы", "город", "қаласы", "region", "(city)"})
AUDIO_TYPES = {".wav": "audio/wav", ".mp3": "audio/mpeg"}


@dataclass(frozen=True)
class Word:
    """A transcript word, and whether the recogniser was unsure of it."""

    text: str
    unsure: bool
    percent: int


def transcript_words(words: list[dict[str, Any]]) -> list[Word]:
    """Turn Vosk's words into what the page shows, marking those below LOW_CONFIDENCE."""
    shown = []
    for word in words:
        try:
            confidence = float(word.get("conf", 1.0))
        except (TypeError, ValueError):
            confidence = 1.0
        shown.append(Word(text=str(word.get("word", "")), unsure=confidence < LOW_CONFIDENCE,
                          percent=round(confidence * 100)))
    return shown


def waiting_time(since: datetime, now: datetime) -> str:
    """How long a question has waited, in days and hours, or hours and minutes."""
    minutes = max(0, int((now - since).total_seconds() // 60))
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    if days:
        return str(_("%(days)d d %(hours)d h", days=days, hours=hours))
    if hours:
        return str(_("%(hours)d h %(minutes)d min", hours=hours, minutes=minutes))
    return str(_("%(minutes)d min", minutes=minutes))


def call_length(seconds: int | None) -> str:
    """A call's duration as m:ss."""
    if seconds is None:
        return "—"
    return f"{seconds // 60}:{seconds % 60:02d}"


def region_name(code: str | None) -> str:
    """A region code's name in the request's language."""
    if not code:
        return "—"
    return str(REGIONS.get(code, code))


def region_order(code: str | None, name: str) -> tuple[bool, tuple[tuple[int, ...], str, str]]:
    """The sort key of a region in a list (the question page's tags, the queue's filter, the
    reports): the cities first, then by the name's own word in the alphabet of the page's
    language (i18n.alphabetical). Russian names put "область" before some names and after
    others (the official forms "область Абай", "Акмолинская область"): ordered by the whole
    name, Абай, Жетісу and Ұлытау would stand apart from the other regions, in the middle of
    the list; by the name's own word the list reads as the official lists of the regions do
    (Абай, Акмолинская, Актюбинская, … Туркестанская, Ұлытау)."""
    words = [word for word in name.split() if word.casefold() not in PLACE_KINDS]
    return code not in CITIES, i18n.alphabetical(" ".join(words) or name)


def _field(name: str) -> str:
    """A form field without NUL characters (PostgreSQL refuses them in text: a 500)."""
    return request.form.get(name, "").replace("\x00", "")


def _holder_state(question: Question, user_id: int, now: datetime) -> tuple[str, bool, bool]:
    """Who holds the question (for the page), whether this user holds it, may claim it."""
    if question.status == QUESTION_CLOSED:
        return "—", False, False
    if question.status != QUESTION_CLAIMED or question.claimed_by_id is None:
        return "—", False, True
    if question.claimed_by_id == user_id:
        return str(_("you")), True, False
    name = question.claimed_by.name if question.claimed_by else "—"
    touched = question.claim_touched_at
    if touched is None or touched < lapse_before(now):
        return str(_("%(name)s (idle)", name=name)), False, True
    return name, False, False


def _audio_state(question: Question) -> str:
    """"sms", "stored", "failed", "deleted" or "fetching": what the page says about the audio.

    "deleted": retention (storage.retention) removed the audio; it is never fetched again.
    """
    if question.channel != CHANNEL_VOICE:
        return "sms"
    recording = question.recording
    if recording is None:
        return "fetching"
    if recording.download_state == DOWNLOAD_STORED and recording.file_path:
        return "stored"
    if recording.download_state in (DOWNLOAD_FAILED, DOWNLOAD_REFUSED):
        return "failed"
    if recording.download_state == RECORDING_DELETED:
        return "deleted"
    return "fetching"


def _audio_deleted(question: Question) -> str | None:
    """What the page says about audio that retention deleted; None when it was not deleted."""
    recording = question.recording
    if recording is None or recording.download_state != RECORDING_DELETED:
        return None
    when = local_time(recording.updated_at)
    days = runtime().settings.audio_retention_days
    if days > 0:
        return str(_("The recording was deleted on %(date)s (Almaty): the retention rule keeps "
                     "the audio of a closed question for %(days)s days.", date=when, days=days))
    return str(_("The recording was deleted on %(date)s (Almaty) under the retention rule.",
                 date=when))


def _page_context(session: Session, question: Question, account: auth.Account,
                  now: datetime) -> dict[str, Any]:
    holder, holds, can_claim = _holder_state(question, account.id, now)
    closed = question.status == QUESTION_CLOSED
    # One resident, one consultant (storage.claims): whoever holds the resident's other
    # question takes this one too; the page says so instead of a Claim refused with a 409.
    resident_holder = None
    if can_claim and question.caller_id is not None:
        other = resident_holders(session, [question.caller_id], now, lapse_before(now),
                                 other_than_user=account.id,
                                 other_than_question=question.id).get(question.caller_id)
        if other is not None:
            can_claim = False
            resident_holder = str(_("%(name)s holds question %(id)s of this resident",
                                    name=other.name, id=other.question_id))
    transcript = question.transcript
    audio = _audio_state(question)
    topics = [(topic, topic_title(topic)) for topic in runtime().flow.content.topics]
    if question.topic and question.topic not in runtime().flow.content.topics:
        topics.append((question.topic, topic_title(question.topic)))
    regions = sorted(((code, str(name)) for code, name in REGIONS.items()),
                     key=lambda item: region_order(*item))
    saved = request.args.get("saved", "")
    return {
        "question": question,
        "language_name": i18n.language_name(question.language),
        "channel": str(CHANNELS.get(question.channel, question.channel)),
        "received": local_time(question.created_at),
        "waiting": None if closed else waiting_time(question.created_at, now),
        "status": str(STATUSES.get(question.status, question.status)),
        "holder": holder,
        "holds": holds,
        "can_claim": can_claim,
        "resident_holder": resident_holder,
        "closed": closed,
        "closed_at": local_time(question.closed_at) if question.closed_at else None,
        "closed_by": question.closed_by.name if question.closed_by else None,
        "close_reason": (str(CLOSE_REASONS.get(question.close_reason, question.close_reason))
                         if question.close_reason else None),
        "phone": question.caller.phone if question.caller else None,
        "audio": audio,
        "audio_deleted": _audio_deleted(question),
        "transcription": transcription_words(
            question.transcription_state,
            question.recording.duration if question.recording else None,
            audio == "stored"),
        "no_speech_model": question.transcription_state == TRANSCRIPTION_NO_MODEL,
        "nothing_recognised": nothing_recognised(audio == "stored"),
        "transcript": transcript,
        "words": transcript_words(transcript.words or []) if transcript else [],
        "low_confidence_percent": round(LOW_CONFIDENCE * 100),
        "corrected": question.corrected_text or (transcript.text if transcript else ""),
        "topic": topic_title(question.topic) if question.topic else "—",
        "topics": topics,
        "region": region_name(question.region),
        "regions": regions,
        "quick_close": [(code, str(name)) for code, name in QUICK_CLOSE.items()],
        "history": caller_history(session, question),
        "history_time": local_time,
        "history_topic": topic_title,
        "node_title": node_title,
        "call_length": call_length,
        "statuses": STATUSES,
        "channels": CHANNELS,
        "sms_directions": SMS_DIRECTIONS,
        "sms_status": callbacks.sms_status_words,
        "saved": saved,
        "limits": {"corrected": CORRECTED_MAX, "note": NOTE_MAX, "village": VILLAGE_MAX},
    }


@bp.get("/questions/<int:question_id>")
@auth.role_required(ROLE_CONSULTANT, ROLE_COORDINATOR)
def question(question_id: int) -> ResponseReturnValue:
    """Show a question: audio or text, transcript, caller history, notes, tags, closing."""
    account = auth.current_account()
    now = utcnow()
    with unit_of_work(runtime().sessions) as db:
        touch_claim(db, question_id, account.id, now)
        found = load_question(db, question_id)
        if found is None:
            abort(404)
        record_once(db, account.id, audit.OPENED, question_id, now, AUDIT_REPEAT_WINDOW,
                    client_address())
        # The callback panel's own context (hotline.callbacks); this page's names win a clash.
        context = {**callbacks.panel(db, found, account),
                   **_page_context(db, found, account, now)}
        # Rendered inside the session: the panel's objects may load more as the page needs.
        return render_template("question.html", **context)


@bp.get("/questions/<int:question_id>/audio")
@auth.role_required(ROLE_CONSULTANT, ROLE_COORDINATOR)
def question_audio(question_id: int) -> ResponseReturnValue:
    """Send the question's recording, with HTTP Range (the player seeks); 404 until stored."""
    account = auth.current_account()
    now = utcnow()
    with unit_of_work(runtime().sessions) as db:
        found = db.get(Question, question_id)
        recording = found.recording if found is not None else None
        if recording is None or recording.download_state != DOWNLOAD_STORED:
            abort(404)
        # The audio store (runtime().audio) refuses a key leading out of the audio folder
        # (absolute, `..`, a symbolic link out): None, as for audio that is not there.
        audio = runtime().audio.get(recording.file_path, session=db) \
            if recording.file_path else None
        if audio is None:
            abort(404)
        # Every fetch, a range too (one from byte 1 is the whole recording but its first
        # byte): the player's many range requests write one event in the window.
        if request.method == "GET":
            record_once(db, account.id, audit.LISTENED, question_id, now, AUDIT_REPEAT_WINDOW,
                        client_address())
    mimetype = AUDIO_TYPES.get(PurePosixPath(audio.key).suffix.lower(), "application/octet-stream")
    if audio.path is not None:  # the folder store: send the file itself
        return send_file(audio.path, mimetype=mimetype, conditional=True, max_age=0)
    # The database store: the bytes in memory (a BytesIO has a known size, so HTTP Range and
    # 206 work as for a file); the ETag from the size and the time the blob was stored.
    stamp = int(audio.modified.timestamp()) if audio.modified else 0
    return send_file(audio.open(), mimetype=mimetype, conditional=True, max_age=0,
                     etag=f"blob-{audio.size}-{stamp}", last_modified=audio.modified)


def _refusal(session: Session, question_id: int, user_id: int,
             now: datetime) -> ResponseReturnValue | None:
    """None when the user holds the question's claim (now touched); else a 409 page or 404."""
    if touch_claim(session, question_id, user_id, now):
        return None
    found = session.get(Question, question_id)
    if found is None:
        abort(404)
    if found.status == QUESTION_CLOSED:
        message = _("Question %(id)s is closed already.", id=question_id)
    elif found.status == QUESTION_CLAIMED and found.claimed_by is not None:
        message = _("Question %(id)s is being handled by %(name)s. Please choose another one.",
                    id=question_id, name=found.claimed_by.name)
    else:
        message = _("Please claim question %(id)s before changing it.", id=question_id)
    # Sent with htmx (a note, tags, the transcript), the message takes the page's main part
    # (workspace.private), with what the user wrote to copy.
    return render_template(
        "message.html", title=_("Not changed"), message=message, draft=auth.written_draft(),
        back=url_for("workspace.question", question_id=question_id)), 409


def _invalid(question_id: int) -> ResponseReturnValue:
    return render_template(
        "message.html", title=_("Not changed"),
        message=_("The form had a value the page does not offer. Please try again."),
        back=url_for("workspace.question", question_id=question_id)), 400


def _saved(question_id: int, part: str, anchor: str | None = None) -> ResponseReturnValue:
    # A plain form reloads the page; htmx follows the redirect and takes the part it needs.
    return redirect(url_for("workspace.question", question_id=question_id, saved=part,
                            _anchor=anchor or part), 303)


@bp.post("/questions/<int:question_id>/release")
@auth.role_required(ROLE_CONSULTANT, ROLE_COORDINATOR)
@retry_conflicts
def release(question_id: int) -> ResponseReturnValue:
    """Give the question back to the queue."""
    account = auth.current_account()
    now = utcnow()
    with unit_of_work(runtime().sessions) as db:
        lock_attempts(db, [question_id])  # before the question: see _change
        refused = _refusal(db, question_id, account.id, now)
        if refused is not None:
            return refused
        release_claim(db, question_id, account.id)
        end_live_attempts(db, question_id, now)  # the resident is not dialled after all
        audit.record(db, account.id, audit.RELEASED, question_id, ip=client_address(), at=now)
    return redirect(url_for("workspace.queue", released=question_id), 303)


Change = Callable[[Session, Question, int, datetime], object]


@retry_conflicts
def _change(question_id: int, apply: Change, *,
            ends_calls: bool = False) -> ResponseReturnValue | None:
    """Apply a change to a question the user holds, in one transaction with its audit event.

    None when it was made; otherwise the answer to give (409/404 when the user does not hold
    the question, 400 when the form had a value the page does not offer). A change that ends
    the question's calls (ends_calls) locks the resident's row, then the calls' attempts,
    then the question: the order of the outcome form (hotline.callbacks._held_together) and
    of Twilio's status callbacks (attempt, then question), so that an outcome or a status
    arriving at the same moment waits instead of deadlocking with it, and a last failed try
    on the resident's other question is seen (callbacks.send_owed_gave_up_sms).
    """
    account = auth.current_account()
    now = utcnow()
    with unit_of_work(runtime().sessions) as db:
        if ends_calls:
            lock_resident_of(db, question_id)
            lock_attempts(db, [question_id])
        refused = _refusal(db, question_id, account.id, now)
        if refused is not None:
            return refused
        found = load_question(db, question_id)
        assert found is not None
        try:
            apply(db, found, account.id, now)
        except InvalidChange:
            return _invalid(question_id)
    return None


@bp.post("/questions/<int:question_id>/transcript")
@auth.role_required(ROLE_CONSULTANT, ROLE_COORDINATOR)
def correct(question_id: int) -> ResponseReturnValue:
    """Save the corrected version of the transcript."""
    refused = _change(question_id, lambda db, found, user_id, now: correct_transcript(
        db, found, _field("corrected_text"), user_id, now, client_address()))
    return refused if refused is not None else _saved(question_id, "transcript")


@bp.post("/questions/<int:question_id>/notes")
@auth.role_required(ROLE_CONSULTANT, ROLE_COORDINATOR)
def note(question_id: int) -> ResponseReturnValue:
    """Add a note to the question; an empty one (spaces only) is said to be empty, not saved."""
    body = _field("body")
    refused = _change(question_id, lambda db, found, user_id, now: add_note(
        db, found, body, user_id, now, client_address()))
    if refused is not None:
        return refused
    return _saved(question_id, "notes" if body.strip() else "empty-note", "notes")


@bp.post("/questions/<int:question_id>/tags")
@auth.role_required(ROLE_CONSULTANT, ROLE_COORDINATOR)
def tags(question_id: int) -> ResponseReturnValue:
    """Set the question's topic, region, village and urgency."""
    refused = _change(question_id, lambda db, found, user_id, now: set_tags(
        db, found, topic=_field("topic"), region=_field("region"), village=_field("village"),
        urgent=request.form.get("urgent") == "1", topics=tuple(runtime().flow.content.topics),
        user_id=user_id, now=now, ip=client_address()))
    return refused if refused is not None else _saved(question_id, "tags")


# Quick closes after which a "we tried to call you" SMS held back for this question is sent
# (callbacks.send_owed_gave_up_sms): a silent or test recording is no reason to leave the
# resident unanswered about the question we failed to reach them on. Not after a wrong number
# (not theirs) nor abuse.
SENDS_OWED_SMS = (CLOSE_SILENCE, CLOSE_TEST_CALL)


@bp.post("/questions/<int:question_id>/close")
@auth.role_required(ROLE_CONSULTANT, ROLE_COORDINATOR)
def close(question_id: int) -> ResponseReturnValue:
    """Close the question without a conversation, for one of the quick-close reasons."""
    owed: list[int | None] = []

    def quick(db: Session, found: Question, user_id: int, now: datetime) -> None:
        owed.clear()  # a transaction run again (retry_conflicts): only the last one's
        reason = _field("reason")
        quick_close(db, found, reason, user_id, now, client_address())
        end_live_attempts(db, found.id, now)  # the resident is not dialled after all
        if reason in SENDS_OWED_SMS:
            owed.append(callbacks.send_owed_gave_up_sms(db, found, user_id, now))

    refused = _change(question_id, quick, ends_calls=True)
    if refused is not None:
        return refused
    for message_id in owed:
        callbacks.enqueue_sms(message_id)
    return redirect(url_for("workspace.queue", closed=question_id), 303)
