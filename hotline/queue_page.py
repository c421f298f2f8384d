"""The callback queue page, and claiming a question from it.

GET /queue shows one status tab (storage.queue: due, scheduled, claimed, open, closed) of the
questions in priority order, filtered by language, topic, channel and region (a GET form, so a
filtered queue is a link a consultant can keep), with the counts in the tabs and the filters'
choices, and keyset paging (?after=). POST /questions/<id>/claim claims a question and opens its
page.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from flask import abort, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_babel import ngettext

from hotline import auth, i18n
from hotline.callbacks import outside_calling_hours
from hotline.config import LOCAL_TIME
from hotline.question_page import region_name, region_order
from hotline.workspace import (
    CHANNELS,
    bp,
    lapse_before,
    local_time,
    nothing_recognised,
    runtime,
    topic_title,
    transcription_words,
)
from storage import audit
from storage.callbacks import talks_without_outcome
from storage.claims import (
    ResidentHolder,
    claim_next_once,
    claim_once,
    held_by,
    resident_holders,
)
from storage.db import retry_conflicts, unit_of_work
from storage.models import (
    CHANNEL_SMS,
    CHANNEL_VOICE,
    CLOSE_ABUSIVE,
    CLOSE_NO_ANSWER,
    CLOSE_RESOLVED,
    CLOSE_SILENCE,
    CLOSE_TEST_CALL,
    CLOSE_WRONG_NUMBER,
    QUESTION_CLAIMED,
    QUESTION_CLOSED,
    ROLE_CONSULTANT,
    ROLE_COORDINATOR,
    TRANSCRIPTION_DONE,
    CallbackAttempt,
    Question,
    utcnow,
)
from storage.queue import (
    FACETS,
    PAGE_SIZE,
    STATUS_CLAIMED,
    STATUS_CLOSED,
    STATUS_DUE,
    STATUS_OPEN,
    STATUS_SCHEDULED,
    STATUSES,
    UNSET,
    Cursor,
    QueueCounts,
    QueueFilter,
    Unheard,
    asked,
    queue_counts,
    queue_page,
    unheard,
)
from storage.sms import answered_by_sms

STATUS_TABS = {
    STATUS_DUE: _l("Due now"),
    STATUS_SCHEDULED: _l("Retry later"),
    STATUS_CLAIMED: _l("Claimed"),
    STATUS_OPEN: _l("All open"),
    STATUS_CLOSED: _l("Closed"),
}
FACET_LABELS = {"language": _l("Language"), "topic": _l("Topic"), "channel": _l("Channel"),
                "region": _l("Region")}
CLOSE_REASONS = {
    CLOSE_RESOLVED: _l("resolved"),
    CLOSE_NO_ANSWER: _l("no answer"),
    CLOSE_WRONG_NUMBER: _l("wrong number"),
    CLOSE_SILENCE: _l("silence"),
    CLOSE_TEST_CALL: _l("test call"),
    CLOSE_ABUSIVE: _l("abusive"),
}
# A facet value from the address is at most this long (the columns are 64 characters).
MAX_FILTER_LENGTH = 64


@dataclass(frozen=True)
class Badge:
    """A reason a question is where it is in the queue (or why it was closed)."""

    kind: str  # urgent, repeat, attempts, retry, talked, follow-up, closed...: the CSS class
    text: str


@dataclass(frozen=True)
class QueueRow:
    """One question as the queue table shows it."""

    id: int
    # How long it has waited ("3 h"), or when it was closed; the arrival time in full.
    waited: str
    received: str
    badges: list[Badge]
    language: str
    topic: str
    channel: str
    region: str
    transcription: str
    # The start of what the resident asked (their SMS, the transcript), in their language.
    asked: str
    asked_language: str | None
    # Who holds the question ("—" when nobody does), and whether this user may claim it.
    holder: str
    claimable: bool


@dataclass(frozen=True)
class Choice:
    """An option of a filter's select."""

    value: str
    label: str
    selected: bool


def waited(since: datetime, now: datetime) -> str:
    """A short waiting time: minutes under an hour, hours under two days, then days."""
    seconds = max(0, int((now - since).total_seconds()))
    if seconds < 3600:
        return str(_("%(n)s min", n=seconds // 60))
    if seconds < 48 * 3600:
        return str(_("%(n)s h", n=seconds // 3600))
    return str(_("%(n)s d", n=seconds // 86400))


def _clock(moment: datetime, now: datetime) -> str:
    """Almaty's wall clock: HH:MM today, with the date on another day."""
    local = moment.astimezone(LOCAL_TIME)
    if local.date() == now.astimezone(LOCAL_TIME).date():
        return local.strftime("%H:%M")
    return local.strftime("%d.%m %H:%M")


def _holder(question: Question, user_id: int, lapsed: datetime) -> tuple[str, bool]:
    if question.status == QUESTION_CLOSED:
        return "—", False
    if question.status != QUESTION_CLAIMED or question.claimed_by is None:
        return "—", True
    if question.claimed_by_id == user_id:
        return str(_("you")), False
    touched = question.claim_touched_at
    if touched is None or touched < lapsed:
        return str(_("%(name)s (idle)", name=question.claimed_by.name)), True
    return question.claimed_by.name, False


def _badges(question: Question, now: datetime, talk: CallbackAttempt | None = None,
            sms_answered: bool = False) -> list[Badge]:
    badges = []
    if question.status == QUESTION_CLOSED:
        if question.close_reason:
            badges.append(Badge("closed", str(CLOSE_REASONS.get(question.close_reason,
                                                                question.close_reason))))
        return badges
    if question.urgent:
        badges.append(Badge("urgent", str(_("urgent"))))
    promise = None if sms_answered else _promise(question, now)
    if promise is not None:
        badges.append(promise)
    if question.repeat_caller:
        badges.append(Badge("repeat", str(_("repeat caller"))))
    attempts = question.callback_attempts or 0
    if attempts:
        badges.append(Badge("attempts", ngettext("%(num)d failed attempt",
                                                 "%(num)d failed attempts", attempts)))
    if question.next_callback_at is not None and question.next_callback_at > now:
        badges.append(Badge("retry", str(_("retry at %(time)s",
                                           time=_clock(question.next_callback_at, now)))))
    if talk is not None and not (question.status == QUESTION_CLAIMED
                                 and question.claimed_by_id == talk.consultant_id):
        # Someone talked with the resident and wrote no outcome (their claim lapsed or was
        # released): the next consultant reads the notes, or asks them, before calling again.
        badges.append(Badge("talked", str(_("%(name)s talked with them at %(time)s; no "
                                            "outcome written", name=talk.consultant.name,
                                            time=_clock(talk.created_at, now)))))
    if question.referral and question.referral.strip():
        # Sent back as "needs follow-up" (a referral may come with another outcome too): not a
        # fresh question; the next lawyer sees where the resident was sent, the rest on its page.
        badges.append(Badge("follow-up", str(_("follow-up: referred to %(referral)s",
                                               referral=shorten(question.referral,
                                                                REFERRAL_SHOWN)))))
    return badges


def _promise(question: Question, now: datetime) -> Badge | None:
    """Whether the resident's promised callback is due today or overdue, until a first
    callback is tried or an outcome written (and, by the caller, until a consultant answers
    by SMS).

    The phone and the SMS promise a lawyer's call within HOTLINE_CALLBACK_DAYS working days,
    counted as the reports count their target (storage.workdays: the end of the N-th working
    day after the day the question came in, Almaty time; Monday to Friday less the public
    holidays of HOTLINE_HOLIDAYS). A caller whose number was hidden was promised nothing
    (flows: for_hidden_number). A volunteer choosing what to take sees which promises are
    running out; the queue's order does not change (waiting time is in it already)."""
    if question.first_callback_at is not None or question.caller_id is None:
        return None
    settings = runtime().settings
    deadline = settings.work_calendar.deadline(question.created_at, settings.callback_days,
                                               LOCAL_TIME)
    last_day = (deadline - timedelta(days=1)).date()  # deadline is midnight, Almaty time
    if now >= deadline:
        return Badge("late", str(_("promised by %(day)s", day=last_day.strftime("%d.%m"))))
    if last_day == now.astimezone(LOCAL_TIME).date():
        return Badge("due-today", str(_("promised by today")))
    return None


def _region(region: str | None) -> str:
    """A region code's name (the question page tags questions with codes)."""
    return region_name(region) if region else str(_("no region"))


# How much of what a resident asked a queue row shows: about a line on a phone's screen.
ASKED_SHOWN = 90
# How much of a referral a queue row's badge shows.
REFERRAL_SHOWN = 40


def shorten(text: str, length: int = ASKED_SHOWN) -> str:
    """text on one line, cut at a word before length characters, with "…" when cut."""
    flat = " ".join(text.split())
    if len(flat) <= length:
        return flat
    cut = flat[:length].rsplit(" ", 1)[0] if " " in flat[:length] else flat[:length]
    return cut.rstrip(" ,.;:") + "…"


def _row(question: Question, user_id: int, lapsed: datetime, now: datetime,
         residents: dict[int, ResidentHolder], talks: dict[int, CallbackAttempt],
         answered: set[int], words: dict[int, str],
         recordings: dict[int, Unheard]) -> QueueRow:
    holder, claimable = _holder(question, user_id, lapsed)
    resident = residents.get(question.caller_id) if question.caller_id is not None else None
    if claimable and resident is not None and resident.question_id != question.id:
        # One resident, one consultant (storage.claims): whoever holds their other question
        # answers this one in the same call.
        if resident.user_id == user_id:
            holder = str(_("you hold question %(id)s of this resident", id=resident.question_id))
        else:
            holder = str(_("%(name)s holds question %(id)s of this resident",
                           name=resident.name, id=resident.question_id))
            claimable = False
    recording = recordings.get(question.id)
    if question.status == QUESTION_CLOSED:
        shown = local_time(question.closed_at) if question.closed_at else "—"
    else:
        shown = waited(question.created_at, now)
    return QueueRow(
        id=question.id,
        waited=shown,
        received=local_time(question.created_at),
        badges=_badges(question, now, talks.get(question.id), question.id in answered),
        language=i18n.language_name(question.language),
        topic=topic_title(question.topic),
        channel=str(CHANNELS.get(question.channel, question.channel)),
        region=_region(question.region),
        transcription=_transcription(question, recording, words.get(question.id, "")),
        asked=shorten(words.get(question.id, "")),
        asked_language=question.language,
        holder=holder,
        claimable=claimable,
    )


def _transcription(question: Question, recording: Unheard | None, asked: str) -> str:
    """The "What they asked" column when there are no words to show: where the transcription
    stands, or that it found none."""
    if question.channel != CHANNEL_VOICE:
        return "—"
    if question.transcription_state == TRANSCRIPTION_DONE and not asked.strip():
        return nothing_recognised(recording.stored if recording else False)
    return transcription_words(question.transcription_state,
                               recording.seconds if recording else None,
                               recording.stored if recording else False)


def _facet_label(name: str, value: str | None) -> str:
    if name == "language":
        return i18n.language_name(value)
    if name == "topic":
        return topic_title(value)
    if name == "channel":
        return str(CHANNELS.get(value or "", value or "—"))
    return _region(value)


def _choices(name: str, counted: dict[str | None, int], chosen: str | None) -> list[Choice]:
    """A facet's options: every value the open questions have, with its count; "all" first."""
    total = sum(counted.values())
    options = [Choice("", f"{_('all')} ({total})", chosen is None)]
    values = dict(counted)
    if chosen is not None:
        values.setdefault(None if chosen == UNSET else chosen, 0)
    # In the alphabet of the page's language; regions as in every list of them (the cities
    # first, then by the name's own word: question_page.region_order).
    labelled = sorted(((_facet_label(name, value), value) for value in values),
                      key=lambda pair: (pair[1] is None,
                                        region_order(pair[1], pair[0]) if name == "region"
                                        else (False, i18n.alphabetical(pair[0]))))
    for label, value in labelled:
        code = UNSET if value is None else value
        options.append(Choice(code, f"{label} ({values[value]})", code == chosen))
    return options


def _read_filter() -> QueueFilter:
    """The queue's filter from the address; anything unknown is ignored."""
    status = request.args.get("status", STATUS_DUE)
    facets: dict[str, Any] = {}
    for name in FACETS:
        value = request.args.get(name, "").strip()[:MAX_FILTER_LENGTH]
        facets[name] = value or None
    return QueueFilter(status=status if status in STATUSES else STATUS_DUE, **facets)


def _address(filters: QueueFilter, **changes: str | None) -> str:
    """The queue's address for the filter, with some parameters changed (None: dropped)."""
    params: dict[str, str | None] = {"status": filters.status}
    params.update({name: filters.facet(name) for name in FACETS})
    params.update(changes)
    if params.get("status") == STATUS_DUE:
        params.pop("status")  # the default
    query = urlencode({key: value for key, value in params.items() if value})
    return url_for("workspace.queue") + (f"?{query}" if query else "")


def _tabs(filters: QueueFilter, counts: QueueCounts) -> list[dict[str, Any]]:
    return [{"status": status, "label": str(label), "count": counts.statuses[status],
             "href": _address(filters, status=status, after=None),
             "current": status == filters.status}
            for status, label in STATUS_TABS.items()]


def _notice() -> str | None:
    """What the question page's redirect tells (?released=<id>, ?closed=<id>)."""
    released, closed = request.args.get("released", ""), request.args.get("closed", "")
    # ASCII and short: str.isdigit() accepts "²", and int() refuses it or 4300+ digits.
    if released.isascii() and released.isdigit() and len(released) < 12:
        return str(_("Question %(id)s is back in the queue.", id=int(released)))
    if closed.isascii() and closed.isdigit() and len(closed) < 12:
        return str(_("Question %(id)s is closed.", id=int(closed)))
    return None


@bp.get("/queue")
@auth.role_required(ROLE_CONSULTANT, ROLE_COORDINATOR)
def queue() -> ResponseReturnValue:
    """List a tab of the queue in priority order, filtered, with the counts and paging."""
    user_id = auth.current_account().id
    now = utcnow()
    lapsed = lapse_before(now)
    filters = _read_filter()
    after = Cursor.decode(request.args.get("after"))
    with unit_of_work(runtime().sessions, read_only=True) as db:
        found = queue_page(db, filters, now, after=after, limit=PAGE_SIZE)
        counts = queue_counts(db, filters, now)
        residents = resident_holders(
            db, (q.caller_id for q in found.questions
                 if q.caller_id is not None and q.status != QUESTION_CLOSED), now, lapsed)
        open_ids = [q.id for q in found.questions if q.status != QUESTION_CLOSED]
        talks = talks_without_outcome(db, open_ids)
        answered = answered_by_sms(db, open_ids)
        words = asked(db, found.questions)
        recordings = unheard(db, found.questions)
        rows = [_row(q, user_id, lapsed, now, residents, talks, answered, words, recordings)
                for q in found.questions]
        mine = [{"id": question_id,
                 "href": url_for("workspace.question", question_id=question_id)}
                for question_id in held_by(db, user_id, now, lapsed)]
    selects = [{"name": name, "label": str(FACET_LABELS[name]),
                "choices": _choices(name, counts.facets[name], filters.facet(name))}
               for name in FACETS]
    return render_template(
        "queue.html", rows=rows, notice=_notice(), tabs=_tabs(filters, counts), selects=selects,
        mine=mine, idle_minutes=runtime().settings.claim_idle_minutes,
        night=_night_note(filters),
        next_filters={name: filters.facet(name) for name in FACETS if filters.facet(name)},
        due_count=counts.statuses[STATUS_DUE],
        status=filters.status, closed=filters.status == STATUS_CLOSED,
        filtered=any(filters.facet(name) for name in FACETS),
        clear=_address(QueueFilter(status=filters.status)),
        next_page=_address(filters, after=found.next.encode()) if found.next else None,
        first_page=_address(filters) if after else None,
    )


def _night_note(filters: QueueFilter) -> dict[str, str] | None:
    """Outside the calling hours, before anyone claims a call: nobody can be called now, and
    where the SMS questions are (they can be answered at any hour)."""
    hours = outside_calling_hours(runtime().settings)
    if hours is None or filters.status == STATUS_CLOSED:
        return None
    text = _("Residents are called from %(start)s:00 to %(end)s:00, Almaty time; it is "
             "%(now)s now. Calls wait for the morning; SMS questions can be answered now.",
             **hours)
    sms = None if filters.facet("channel") == CHANNEL_SMS else _address(
        QueueFilter(status=filters.status, channel=CHANNEL_SMS))
    return {"text": str(text), "sms": sms} if sms else {"text": str(text)}


@bp.post("/queue/next")
@auth.role_required(ROLE_CONSULTANT, ROLE_COORDINATOR)
@retry_conflicts
def take_next() -> ResponseReturnValue:
    """Claim the first due question of the (filtered) queue this user may take, and open it:
    one click from one conversation to the next, without reading the list. A repeat of the
    request a moment ago (the button clicked twice) opens the question that one claimed."""
    account = auth.current_account()
    now = utcnow()
    facets = {name: (request.form.get(name, "").strip()[:MAX_FILTER_LENGTH] or None)
              for name in FACETS}
    if facets["channel"] is None and outside_calling_hours(runtime().settings) is not None:
        # Nobody can be called now: the next question that can be answered now, by SMS.
        facets["channel"] = CHANNEL_SMS
    filters = QueueFilter(status=STATUS_DUE, **facets)
    with unit_of_work(runtime().sessions) as db:
        # The same form posted twice (a double click, no JavaScript) claims once: the second
        # request is sent to the question the first claimed (storage.claims.claim_next_once).
        taken = claim_next_once(db, filters, account.id, now, lapse_before(now))
        if taken is not None and not taken.repeat:
            audit.record(db, account.id, audit.CLAIMED, taken.question_id,
                         ip=request.remote_addr, at=now)
    if taken is not None:
        return redirect(url_for("workspace.question", question_id=taken.question_id), 303)
    flash(_("No question waiting here can be taken now."), "warning")
    return redirect(_address(filters), 303)


@bp.post("/questions/<int:question_id>/claim")
@auth.role_required(ROLE_CONSULTANT, ROLE_COORDINATOR)
@retry_conflicts
def claim(question_id: int) -> ResponseReturnValue:
    """Claim the question for the logged-in user (CSRF-checked) and open it, or say who holds it."""
    account = auth.current_account()
    now = utcnow()
    with unit_of_work(runtime().sessions) as db:
        # A second click (or another tab, even at the same moment) on a question already
        # theirs: opened, not audited as a claim again (storage.claims.claim_once).
        taken = claim_once(db, question_id, account.id, now, lapse_before(now))
        won = taken is not None
        if taken is not None and not taken.repeat:
            audit.record(db, account.id, audit.CLAIMED, question_id, ip=request.remote_addr,
                         at=now)
        question = None if won else db.get(Question, question_id)
        holder = question.claimed_by.name if question and question.claimed_by else None
        status = question.status if question else None
        resident = None
        if question is not None and question.caller_id is not None:
            # Refused because another question of the resident is held by someone else?
            resident = resident_holders(
                db, [question.caller_id], now, lapse_before(now), other_than_user=account.id,
                other_than_question=question_id).get(question.caller_id)
    if won:
        return redirect(url_for("workspace.question", question_id=question_id), 303)
    if status is None:
        abort(404)
    if status == QUESTION_CLOSED:
        message = _("Question %(id)s is closed already.", id=question_id)
    elif resident is not None:
        message = _("%(name)s holds question %(other)s of the same resident and will answer "
                    "question %(id)s in the same call. Please choose another one.",
                    name=resident.name, other=resident.question_id, id=question_id)
    else:
        message = _("Question %(id)s is being handled by %(name)s. Please choose another one.",
                    id=question_id, name=holder or "—")
    return render_template("message.html", title=_("Already taken"), message=message,
                           back=url_for("workspace.queue")), 409
