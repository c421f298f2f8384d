"""The callback queue page, and claiming a question from it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from flask import abort, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _

from hotline import auth, i18n
from hotline.workspace import (
    CHANNELS,
    TRANSCRIPTION,
    bp,
    lapse_before,
    local_time,
    runtime,
    topic_title,
)
from storage.claims import claim_question, open_questions
from storage.db import unit_of_work
from storage.models import (
    CHANNEL_VOICE,
    QUESTION_CLAIMED,
    QUESTION_CLOSED,
    ROLE_CONSULTANT,
    ROLE_COORDINATOR,
    Question,
    utcnow,
)

QUEUE_PAGE_SIZE = 200


@dataclass(frozen=True)
class QueueRow:
    """One waiting question as the queue table shows it."""

    id: int
    received: str
    language: str
    topic: str
    channel: str
    transcription: str
    # Who holds the question ("—" when nobody does), and whether this user may claim it.
    holder: str
    claimable: bool


def _holder(question: Question, user_id: int, lapsed: datetime) -> tuple[str, bool]:
    if question.status != QUESTION_CLAIMED or question.claimed_by is None:
        return "—", True
    if question.claimed_by_id == user_id:
        return str(_("you")), False
    touched = question.claim_touched_at
    if touched is None or touched < lapsed:
        return str(_("%(name)s (idle)", name=question.claimed_by.name)), True
    return question.claimed_by.name, False


def _row(question: Question, user_id: int, lapsed: datetime) -> QueueRow:
    holder, claimable = _holder(question, user_id, lapsed)
    return QueueRow(
        id=question.id,
        received=local_time(question.created_at),
        language=i18n.LANGUAGES.get(question.language or "", question.language or "—"),
        topic=topic_title(question.topic),
        channel=str(CHANNELS.get(question.channel, question.channel)),
        transcription=(str(TRANSCRIPTION.get(question.transcription_state,
                                              question.transcription_state))
                       if question.channel == CHANNEL_VOICE else "—"),
        holder=holder,
        claimable=claimable,
    )


@bp.get("/queue")
@auth.role_required(ROLE_CONSULTANT, ROLE_COORDINATOR)
def queue() -> ResponseReturnValue:
    """List the questions waiting for a consultant or claimed by one, oldest first."""
    user_id = auth.current_account().id
    lapsed = lapse_before(utcnow())
    with unit_of_work(runtime().sessions) as db:
        rows = [_row(q, user_id, lapsed)
                for q in open_questions(db, limit=QUEUE_PAGE_SIZE)]
    claimed = request.args.get("claimed", "")
    notice = (_("You have claimed question %(id)s.", id=int(claimed))
              if claimed.isdigit() else None)
    return render_template("queue.html", rows=rows, notice=notice)


@bp.post("/questions/<int:question_id>/claim")
@auth.role_required(ROLE_CONSULTANT, ROLE_COORDINATOR)
def claim(question_id: int) -> ResponseReturnValue:
    """Claim the question for the logged-in user (CSRF-checked), or say who holds it."""
    account = auth.current_account()
    now = utcnow()
    with unit_of_work(runtime().sessions) as db:
        won = claim_question(db, question_id, account.id, now, lapse_before(now))
        question = None if won else db.get(Question, question_id)
        holder = question.claimed_by.name if question and question.claimed_by else None
        status = question.status if question else None
    if won:
        return redirect(url_for("workspace.queue", claimed=question_id), 303)
    if status is None:
        abort(404)
    if status == QUESTION_CLOSED:
        message = _("Question %(id)s is closed already.", id=question_id)
    else:
        message = _("Question %(id)s is being handled by %(name)s. Please choose another one.",
                    id=question_id, name=holder or "—")
    return render_template("message.html", title=_("Already taken"), message=message,
                           back=url_for("workspace.queue")), 409


