"""The consultants' workspace in the browser: the queue, and the coordinators' pages."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import cast

from flask import Blueprint, Flask, Response, current_app, redirect, render_template, url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user

from hotline import auth, i18n
from hotline.runtime import Runtime
from storage.db import unit_of_work
from storage.models import (
    CHANNEL_SMS,
    CHANNEL_VOICE,
    ROLE_CONSULTANT,
    ROLE_COORDINATOR,
    TRANSCRIPTION_DONE,
    TRANSCRIPTION_FAILED,
    TRANSCRIPTION_NO_MODEL,
    TRANSCRIPTION_PENDING,
    TRANSCRIPTION_RUNNING,
    Question,
)
from storage.questions import waiting_questions
from storage.users import list_users

# Kazakhstan keeps one zone, UTC+5 since March 2024 (a fixed offset: older tz data says +6).
LOCAL_TIME = timezone(timedelta(hours=5), "Asia/Almaty")
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


def _row(question: Question) -> QueueRow:
    return QueueRow(
        id=question.id,
        received=local_time(question.created_at),
        language=i18n.LANGUAGES.get(question.language or "", question.language or "—"),
        topic=_topic_title(question.topic),
        channel=str(CHANNELS.get(question.channel, question.channel)),
        transcription=(str(TRANSCRIPTION.get(question.transcription_state,
                                              question.transcription_state))
                       if question.channel == CHANNEL_VOICE else "—"),
    )


@bp.before_request
def require_login() -> ResponseReturnValue | None:
    """Send a logged-out visitor of any workspace page to the login form."""
    if not current_user.is_authenticated:
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
    """List the questions waiting for a consultant, oldest first."""
    with unit_of_work(_runtime().sessions) as db:
        rows = [_row(q) for q in waiting_questions(db, limit=QUEUE_PAGE_SIZE)]
    return render_template("queue.html", rows=rows)


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
