"""The consultants' workspace in the browser: the queue, and the coordinators' pages."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    current_app,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user

from hotline import auth, i18n
from hotline.config import LOCAL_TIME
from hotline.runtime import Runtime
from storage.claims import claim_question, open_questions
from storage.db import unit_of_work
from storage.models import (
    CHANNEL_SMS,
    CHANNEL_VOICE,
    QUESTION_CLAIMED,
    QUESTION_CLOSED,
    ROLE_CONSULTANT,
    ROLE_COORDINATOR,
    TRANSCRIPTION_DONE,
    TRANSCRIPTION_FAILED,
    TRANSCRIPTION_NO_MODEL,
    TRANSCRIPTION_PENDING,
    TRANSCRIPTION_RUNNING,
    Question,
    utcnow,
)
from storage.users import list_users

QUEUE_PAGE_SIZE = 200

CHANNELS = {CHANNEL_VOICE: _l("Call"), CHANNEL_SMS: _l("SMS")}
TRANSCRIPTION = {
    TRANSCRIPTION_PENDING: _l("waiting"),
    TRANSCRIPTION_RUNNING: _l("in progress"),
    TRANSCRIPTION_DONE: _l("done"),
    TRANSCRIPTION_FAILED: _l("failed"),
    TRANSCRIPTION_NO_MODEL: _l("no model"),
}
ROLES = {ROLE_CONSULTANT: _l("consultant"), ROLE_COORDINATOR: _l("coordinator")}

bp = Blueprint("workspace", __name__)


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


def _runtime() -> Runtime:
    return cast(Runtime, current_app.extensions["hotline"])


def local_time(moment: datetime) -> str:
    """Show a stored UTC time as Almaty's wall clock."""
    return moment.astimezone(LOCAL_TIME).strftime("%Y-%m-%d %H:%M")


def _topic_title(topic: str | None) -> str:
    if not topic:
        return str(_("general"))
    content = _runtime().flow.content
    language = i18n.current_language()
    if language in content.prompts:
        return str(content.prompts[language].get(f"topic.{topic}.title", topic))
    return topic.replace("_", " ")


def _lapse_before(now: datetime) -> datetime:
    """Claims untouched since this moment have lapsed."""
    return now - timedelta(minutes=_runtime().settings.claim_idle_minutes)


def _holder(question: Question, user_id: int, lapse_before: datetime) -> tuple[str, bool]:
    if question.status != QUESTION_CLAIMED or question.claimed_by is None:
        return "—", True
    if question.claimed_by_id == user_id:
        return str(_("you")), False
    touched = question.claim_touched_at
    if touched is None or touched < lapse_before:
        return str(_("%(name)s (idle)", name=question.claimed_by.name)), True
    return question.claimed_by.name, False


def _row(question: Question, user_id: int, lapse_before: datetime) -> QueueRow:
    holder, claimable = _holder(question, user_id, lapse_before)
    return QueueRow(
        id=question.id,
        received=local_time(question.created_at),
        language=i18n.LANGUAGES.get(question.language or "", question.language or "—"),
        topic=_topic_title(question.topic),
        channel=str(CHANNELS.get(question.channel, question.channel)),
        transcription=(str(TRANSCRIPTION.get(question.transcription_state,
                                              question.transcription_state))
                       if question.channel == CHANNEL_VOICE else "—"),
        holder=holder,
        claimable=claimable,
    )


@bp.before_request
def require_login() -> ResponseReturnValue | None:
    """Send a logged-out visitor of any workspace page to the login form."""
    if not current_user.is_authenticated:
        if request.method != "GET":
            # A form sent after the session expired: after logging in, open the queue (the
            # form's URL cannot be opened with GET).
            return redirect(url_for("auth.login"))
        return cast(ResponseReturnValue, auth.login_manager.unauthorized())
    return None


@bp.after_request
def private(response: Response) -> Response:
    """Keep residents' data out of shared caches and out of other sites' frames."""
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    return response


@bp.get("/")
@auth.role_required(ROLE_CONSULTANT, ROLE_COORDINATOR)
def home() -> ResponseReturnValue:
    """Open the queue."""
    return redirect(url_for("workspace.queue"))


@bp.get("/queue")
@auth.role_required(ROLE_CONSULTANT, ROLE_COORDINATOR)
def queue() -> ResponseReturnValue:
    """List the questions waiting for a consultant or claimed by one, oldest first."""
    user_id = auth.current_account().id
    lapse_before = _lapse_before(utcnow())
    with unit_of_work(_runtime().sessions) as db:
        rows = [_row(q, user_id, lapse_before)
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
    with unit_of_work(_runtime().sessions) as db:
        won = claim_question(db, question_id, account.id, now, _lapse_before(now))
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


@bp.get("/admin/users")
@auth.role_required(ROLE_COORDINATOR)
def users() -> ResponseReturnValue:
    """List the workspace's accounts."""
    with unit_of_work(_runtime().sessions) as db:
        accounts = [
            {"name": u.name, "email": u.email, "role": str(ROLES.get(u.role, u.role)),
             "phone": u.phone or "—", "active": u.active,
             "last_login": local_time(u.last_login_at) if u.last_login_at else "—"}
            for u in list_users(db)
        ]
    return render_template("users.html", accounts=accounts)


@bp.errorhandler(403)
def forbidden(_error: Exception) -> ResponseReturnValue:
    """Tell a logged-in user that their role does not open this page."""
    return render_template("message.html", title=_("No access"),
                           message=_("Your role does not give access to this page."),
                           back=url_for("workspace.queue")), 403


def init_app(app: Flask) -> None:
    """Set up logins and languages, and add the workspace's pages to the app."""
    auth.init_app(app)
    app.register_blueprint(bp)
