"""The consultants' workspace: its blueprint (behind a login), shared helpers, the users page."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import cast
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf.csrf import CSRFError
from markupsafe import escape
from sqlalchemy.exc import DBAPIError
from werkzeug.exceptions import HTTPException, InternalServerError, MethodNotAllowed

from flows.engine import DONE, DONE_NO_NUMBER, EMPTY, GOODBYE, LANGUAGE, MAIN, OFFER, RECORD
from hotline import auth, i18n
from hotline.config import LOCAL_TIME
from hotline.runtime import Runtime
from storage.db import is_conflict
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
)

CHANNELS = {CHANNEL_VOICE: _l("Call"), CHANNEL_SMS: _l("SMS")}
TRANSCRIPTION = {
    TRANSCRIPTION_PENDING: _l("waiting"),
    TRANSCRIPTION_RUNNING: _l("in progress"),
    TRANSCRIPTION_DONE: _l("done"),
    TRANSCRIPTION_FAILED: _l("failed"),
    TRANSCRIPTION_NO_MODEL: _l("no model"),
}
ROLES = {ROLE_CONSULTANT: _l("consultant"), ROLE_COORDINATOR: _l("coordinator")}


def nothing_recognised(stored: bool) -> str:
    """A transcription that ran and recognised no word (silence, a line too poor): not "done",
    which in the queue's "What they asked" column read as if the question were handled; to
    listen to the recording only while it is here (stored: not deleted by retention)."""
    if stored:
        return str(_("No words recognised: listen to the recording"))
    return str(_("No words recognised"))


def transcription_words(state: str, seconds: int | None = None, stored: bool = False) -> str:
    """Where a question's transcription stands, for the queue and the question's page. A
    recording no speech model could transcribe (none installed for its language) sends the
    lawyer to the recording, with its length when Twilio gave it (stored: the audio is here)."""
    if state != TRANSCRIPTION_NO_MODEL:
        return str(TRANSCRIPTION.get(state, state))
    if not stored:
        return str(_("Not transcribed (no speech model here)"))
    if seconds is None:
        return str(_("Not transcribed (no speech model here): listen to the recording"))
    return str(_("Not transcribed (no speech model here): listen to the recording "
                 "(%(length)s)", length=f"{seconds // 60}:{seconds % 60:02d}"))

bp = Blueprint("workspace", __name__)
log = logging.getLogger(__name__)


def runtime() -> Runtime:
    """The process's Runtime."""
    return cast(Runtime, current_app.extensions["hotline"])


def local_time(moment: datetime) -> str:
    """Show a stored UTC time as Almaty's wall clock."""
    return moment.astimezone(LOCAL_TIME).strftime("%Y-%m-%d %H:%M")


def topic_title(topic: str | None) -> str:
    if not topic:
        return str(_("general"))
    content = runtime().flow.content
    language = i18n.current_language()
    if language in content.prompts:
        return str(content.prompts[language].get(f"topic.{topic}.title", topic))
    known = content.topics.get(topic)
    return known.title if known else topic.replace("_", " ")


def node_title(node: str | None) -> str:
    """Name a place in the phone tree (the reports' menus, a call's last menu in a caller's
    history), in the request's language."""
    content = runtime().flow.content
    names = {LANGUAGE: _("Language menu"), MAIN: _("Main menu"),
             RECORD: _("Recording a question"), OFFER: _("Offered to record a question"),
             DONE: _("After the question was saved"),
             DONE_NO_NUMBER: _("After the question was saved"), EMPTY: _("Nothing was recorded"),
             GOODBYE: _("Goodbye")}
    if node is None:
        return str(_("Before pressing any key"))
    if node in names:
        return str(names[node])
    if node in content.topics:
        return str(_("Explainer: %(topic)s", topic=topic_title(node)))
    if node in content.menus:
        return str(_("Menu %(name)s", name=node))
    return node


def lapse_before(now: datetime) -> datetime:
    """Claims untouched since this moment have lapsed."""
    return now - timedelta(minutes=runtime().settings.claim_idle_minutes)


@bp.before_request
def require_login() -> ResponseReturnValue | None:
    """Send a logged-out visitor of any workspace page to the login form."""
    if not current_user.is_authenticated:
        if request.headers.get("HX-Request") and not request.headers.get(
                "HX-History-Restore-Request"):
            # htmx would put the login page where the call's status (polled) was: the
            # whole page goes to the login form instead, and back to this page after it.
            # (A form without a session fails its CSRF check first, and shows that message:
            # private. A history restore follows the redirect below as a page does.)
            page = urlsplit(request.headers.get("HX-Current-URL", "")).path
            if page.startswith("/") and not page.startswith("//"):
                session["next"] = page  # where auth.to_login keeps it
            response = Response(status=200)
            response.headers["HX-Redirect"] = url_for("auth.login")
            return response
        if request.method != "GET":
            # A form sent after the session expired: after logging in, open the queue (the
            # form's URL cannot be opened with GET).
            return redirect(url_for("auth.login"))
        return cast(ResponseReturnValue, auth.login_manager.unauthorized())
    return None


@bp.after_request
def private(response: Response) -> Response:
    """Keep residents' data out of shared caches and out of other sites' frames; and show an
    htmx form's refusal or failure (static/workspace.js lets htmx swap it)."""
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    if request.headers.get("HX-Request") and response.status_code >= 400 \
            and request.method != "GET":
        # A note, tags or a transcript sent with htmx: the page's main part becomes the
        # message ("Not changed", "Please try again"...), where a plain form's answer would
        # have been the whole page (static/workspace.js lets htmx swap it). A failed poll or
        # filter (GET) is dropped, as htmx does: its part of the page stays as it was.
        response.headers["HX-Retarget"] = "main"
        response.headers["HX-Reselect"] = "main"
        response.headers["HX-Reswap"] = "outerHTML"
    return response


@bp.get("/")
@auth.role_required(ROLE_CONSULTANT, ROLE_COORDINATOR)
def home() -> ResponseReturnValue:
    """Open the queue."""
    return redirect(url_for("workspace.queue"))


@bp.errorhandler(403)
def forbidden(_error: Exception) -> ResponseReturnValue:
    """Tell a logged-in user that their role does not open this page."""
    return render_template("message.html", title=_("No access"),
                           message=_("Your role does not give access to this page."),
                           back=url_for("workspace.queue")), 403


@bp.errorhandler(404)
def not_found(_error: Exception) -> ResponseReturnValue:
    """A question, panel or file that is not there, in the user's language (not Werkzeug's)."""
    return render_template("message.html", title=_("Not found"),
                           message=_("There is no such question or page here."),
                           back=url_for("workspace.queue")), 404


@bp.errorhandler(400)
def bad_request(error: Exception) -> ResponseReturnValue:
    """A request the pages could not read (a filter, a date, a form), in the user's language.

    A missing CSRF token is a 400 too; it keeps its own answer (auth.csrf_failed), which this
    blueprint's handler would otherwise take over from the app's."""
    if isinstance(error, CSRFError):
        return auth.csrf_failed(error)
    return render_template("message.html", title=_("Could not read the request"),
                           message=_("Something in the address or the form could not be read. "
                                     "Please go back and try again."),
                           back=url_for("workspace.queue")), 400


@bp.errorhandler(DBAPIError)
def busy(error: DBAPIError) -> ResponseReturnValue:
    """A form the database aborted three times for others' sake (storage.db.retry_conflicts):
    nothing of it was saved, and the consultant is told so and asked to send it again. Any
    other database error stays an error (a 500, logged)."""
    if not is_conflict(error):
        raise error
    log.warning("%s: the database aborted the form on every try (%s); nothing was saved",
                request.endpoint, getattr(error.orig, "sqlstate", "?"))
    question_id = (request.view_args or {}).get("question_id")
    back = (url_for("workspace.question", question_id=question_id) if question_id is not None
            else url_for("workspace.queue"))
    return render_template("message.html", title=_("Please try again"),
                           message=_("Someone else was changing the same question at the same "
                                     "moment, and nothing of yours was saved. Please go back "
                                     "and send it again."),
                           back=back), 503


# The last resort when even the error page cannot be rendered (its template, the session).
PLAIN_SERVER_ERROR = (
    "Серверде қате шықты: жіберілгеніңіз сақталмаған болуы мүмкін. Бір минуттан кейін қайталаңыз.\n"
    "Ошибка на сервере: отправленное могло не сохраниться. Повторите через минуту.\n"
    "Something went wrong on the server: what you sent may not have been saved. Try again in a "
    "minute.\n")


@bp.errorhandler(InternalServerError)
def server_error(_error: InternalServerError) -> ResponseReturnValue:
    """Any failure of a workspace page (the database gone, a bug), in the user's language, with
    what they wrote to copy; logged by Flask with its traceback before this runs."""
    written = auth.written_draft()
    if "_login_user" not in g:
        # The failure came before the user was loaded (the database gone): the page's header
        # would try again, and fail; it is drawn for nobody instead.
        g._login_user = auth.login_manager.anonymous_user()
    try:
        return render_template(
            "message.html", title=_("Something went wrong"),
            message=_("The hotline could not do this just now, and what you sent may not have "
                      "been saved. Please check, and try again in a minute. If it keeps "
                      "happening, tell a coordinator."),
            draft=written, back=url_for("workspace.queue")), 500
    except Exception:  # noqa: BLE001 - the last line of defence must answer
        log.exception("the error page could not be rendered")
        # A page of its own, with a <main> for htmx to show (private).
        body = "".join(f"<p>{escape(line)}</p>" for line in PLAIN_SERVER_ERROR.splitlines())
        if written:
            body += f"<textarea readonly rows=8>{escape(written)}</textarea>"
        return Response(f"<!doctype html><html><head><meta charset=utf-8></head><body><main>"
                        f"{body}</main></body></html>", 500, mimetype="text/html")


def init_app(app: Flask) -> None:
    """Set up logins and languages, and add the workspace's pages to the app.

    The pages live in their own modules, all on this blueprint (so all behind its login check):
    queue_page (the queue and claiming), question_page (a question, its audio, notes, tags and
    closing), callbacks (calling back, outcomes, SMS answers), audit_page (the audit log),
    users_page (accounts), account_page (one's own phone and password).
    """
    from hotline import (  # noqa: F401
        account_page,
        audit_page,
        callbacks,
        question_page,
        queue_page,
        users_page,
    )

    auth.init_app(app)
    app.register_blueprint(bp)
    app.register_blueprint(callbacks.hooks)
    app.register_error_handler(MethodNotAllowed, form_address_opened)
    # For any code: found after every handler of a code (this blueprint's 400, 403 and 404,
    # CSRFError's, the 405 above) and after a blueprint's own for any exception (the voice
    # and SMS webhooks' apology), so it answers only what had Werkzeug's page.
    app.register_error_handler(HTTPException, page_error)


# Addresses that are no browser's page: Twilio's webhooks (/voice, /sms with the SMS status
# callback, /callbacks), the health checks' JSON, static files, and everything under them;
# the public figures' JSON; under /phone (the demo phone's page) its script's JSON and audio.
# An error there keeps the answer it had: Werkzeug's, or its blueprint's own.
NOT_PAGE_AREAS = ("/voice", "/sms", "/callbacks", "/health", "/static")
NOT_PAGES = ("/public/stats.json",)


def is_page(path: str) -> bool:
    """Whether a browser, not Twilio or a script, asks for this address. A file's name (a dot
    in the last part: /favicon.ico, /robots.txt, which browsers and robots ask for on their
    own) is none: no route of the app has one but the JSON's, so its 404 stays Werkzeug's
    few bytes, not a page rendered (and the user loaded) beside every page a browser opens."""
    if path in NOT_PAGES or path.startswith("/phone/") or "." in path.rsplit("/", 1)[-1]:
        return False
    return not any(path == area or path.startswith(f"{area}/") for area in NOT_PAGE_AREAS)


def error_text(code: int) -> tuple[str, str]:
    """The title and message of a request error's page (4xx), in the request's language."""
    if code == 404:
        return _("Not found"), _("There is no such question or page here.")
    if code == 405:
        return (_("Not available this way"),
                _("This address cannot be opened or sent to this way. Please go back and use "
                  "the links and buttons on the page."))
    if code == 413:
        return (_("Too much was sent"),
                _("What you sent is too large to be read. Please go back, shorten it and send "
                  "it again."))
    return (_("Could not read the request"),
            _("Something in the address or the form could not be read. Please go back and try "
              "again."))


def page_error(error: HTTPException) -> ResponseReturnValue:
    """A request error (4xx) that had Werkzeug's English page: an address no route has
    (/questions/abc, a mistyped one), a method a page does not take (405), a form too large
    (413), an unreadable login (400). A page's is the workspace's message page in the user's
    language; the public figures' (/public/...), and a 404 for a visitor not logged in, in the
    public pages' frame, with no cookie (public_stats.error_page).
    Anything else (a webhook's, a JSON address's, a 5xx) keeps the answer it had."""
    code = error.code
    if code is None or not 400 <= code < 500 or not is_page(request.path):
        return error
    public = request.path == "/public" or request.path.startswith("/public/")
    if public or (code == 404 and not current_user.is_authenticated):
        # The public frame sets no cookie: nor does a 404 for someone not logged in (the
        # workspace's page would start a session, for its forms' CSRF token).
        from hotline import public_stats  # it imports this module

        return public_stats.error_page(error)
    title, message = error_text(code)
    response = Response(render_template("message.html", title=title, message=message,
                                        back=url_for("workspace.queue")),
                        code, mimetype="text/html")
    for name, value in error.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value  # a 405's Allow
    return private(response)  # not kept by a cache: the page names the user


def form_address_opened(error: MethodNotAllowed) -> ResponseReturnValue:
    """A GET to a form's address (the language switcher on a refused form's answer, a reload
    after the form, a bookmark): to the page the form is on, the nearest address above it
    that a GET opens (/questions/7/sms to /questions/7, /account/password to /account), with
    the query (the language asked for). Anything else is a page's 405 in the user's language
    (page_error); a webhook is never redirected, and keeps Werkzeug's 405."""
    if request.method == "GET":
        adapter = current_app.url_map.bind_to_environ(request.environ)
        parent = request.path.rstrip("/")
        while "/" in parent.strip("/"):
            parent = parent.rsplit("/", 1)[0]
            try:
                endpoint, _args = adapter.match(parent, method="GET")
            except HTTPException:
                continue
            if endpoint.startswith(f"{bp.name}."):
                query = request.query_string.decode("latin-1")
                return redirect(f"{parent}?{query}" if query else parent, 303)
            break
    return page_error(error)
